"""What the experiment drivers share: a results file of one JSON line per measurement, a row
per key (a rerun replaces its row), each row stamped with the CPU and the date; and running a
selfsup command with its output appended to a log.

    results = Ledger(path, key=("kind", "name", "seed"), smoke=False)
    if results.found("finetune", "dna", 0) is None:
        ...
        results.record({"kind": "finetune", "name": "dna", "seed": 0, "accuracy": 0.91})

A key field a row lacks reads as None, so `found("calibrate")` on key ("kind", "name") finds
the calibrate row that has no name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    return "unknown CPU"


def sh(cmd: list, log: Path) -> None:
    """Run `cmd`, its output appended to `log`; a failure ends the driver naming the log."""
    print("+", " ".join(map(str, cmd)), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        code = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        sys.exit(f"command failed ({code}); see {log}")


class Ledger:
    def __init__(self, path: Path, key: tuple[str, ...] = ("kind", "name"), **stamp):
        self.path, self.key, self.stamp = Path(path), key, stamp

    def _key(self, row: dict) -> tuple:
        return tuple(row.get(k) for k in self.key)

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]

    def found(self, *values) -> dict | None:
        """The row whose key is `values` (missing trailing values: None), or None."""
        want = tuple(values) + (None,) * (len(self.key) - len(values))
        return next((r for r in self.rows() if self._key(r) == want), None)

    def record(self, row: dict) -> dict:
        """Add `row` (stamped), replacing the row of the same key; written atomically."""
        row = {"cpu": cpu(), "date": time.strftime("%Y-%m-%d"), **self.stamp, **row}
        kept = [r for r in self.rows() if self._key(r) != self._key(row)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [*kept, row]))
        os.replace(tmp, self.path)
        shown = {k: v for k, v in row.items() if k != "history"}
        print(json.dumps(shown, ensure_ascii=False)[:400], flush=True)
        return row
