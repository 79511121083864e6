"""What a benchmark ran on, for its RESULTS.md section (imported by the scripts beside it)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def versions() -> str:
    """The machine and the libraries a benchmark ran with, in one line."""
    import os

    import torch
    import transformers

    return (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
            f"Python {platform.python_version()}")  # fmt: skip


def write_section(head: str, script: str, argv: list[str], about: str, table: str) -> None:
    """Put `table` into benchmarks/RESULTS.md under `head`, with the date, `about` (versions)
    and the command that made it: a run replaces its own section, never another's."""
    import time

    path = Path(__file__).resolve().parent / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    cmd = "python " + " ".join([f"benchmarks/{script}", *argv])
    section = (f"{head}\n\n{time.strftime('%Y-%m-%d')}, {about}\n\n"
               f"```\n{cmd}\n```\n\n{table}\n")  # fmt: skip
    if head in text:
        start = text.index(head)
        end = text.find("\n## ", start + len(head))
        text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
