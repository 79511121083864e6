"""A/B of two commits of selfsup in one run: the pretraining benchmark's `mini` ratio against
transformers and the end-to-end `selfsup pretrain` throughput, each commit from its own git
worktree, alternated run by run so that the machine's drift hits both sides alike.

    python benchmarks/ab_commits.py --old 3637f2f --new HEAD --runs 3

Per run and commit: `benchmarks/pretrain_throughput.py --sizes mini --no-memory` of that commit
(its real tokens/s against transformers' on natural-length pairs and on full 128-token rows),
then `selfsup pretrain --preset mini` of that commit for `--pretrain-steps` steps on the
packaged corpus with a tokenizer trained once (tokens/s from its metrics.jsonl, over the whole
run). Prints every run, then the medians and new/old ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_name  # noqa: E402


def worktree(ref: str, root: Path) -> Path:
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    path = root / sha
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), sha],
                       check=True, capture_output=True)  # fmt: skip
    return path


def run(cmd: list[str], tree: Path, env: dict) -> str:
    # fp32 on both sides: a commit with precision "auto" would take bf16 on a bf16 CPU
    env = {**os.environ, **env, "PYTHONPATH": str(tree), "SELFSUP_PRECISION": "fp32"}
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {tree}:\n{done.stderr[-2000:]}")
    return done.stdout


def throughput(tree: Path, steps: int, repeats: int) -> dict:
    cmd = [sys.executable, "benchmarks/pretrain_throughput.py", "--sizes", "mini",
           "--no-memory", "--steps", str(steps), "--repeats", str(repeats)]  # fmt: skip
    out = run(cmd, tree, {})
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    res = {}
    for r in rows:
        if r["side"] == "selfsup":
            res[f"{r['scenario']}_ratio"] = r["ratio"]
            res[f"{r['scenario']}_tok_s"] = r["tokens_per_s"]
    return res


def pretrain(tree: Path, steps: int, tokenizer: Path, work: Path, tag: str) -> float:
    out = work / f"run-{tag}"
    cache = work / f"cache-{tree.name}"
    run([sys.executable, "-m", "selfsup", "pretrain", "--preset", "mini", "--steps", str(steps),
         "--tokenizer", str(tokenizer), "--eval-every", "0", "--save-every", "0",
         "--set", "train.log_every=10", "--cache-dir", str(cache), "--no-progress",
         "--out", str(out)], tree, {})  # fmt: skip
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "tokens_per_s" in r][-1]["tokens_per_s"]  # over the whole run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True)
    p.add_argument("--new", default="HEAD")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=6, help="timed steps per benchmark repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pretrain-steps", type=int, default=60)
    p.add_argument("--work", default=None, help="folder for worktrees and runs (a temp dir)")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="selfsup-ab-"))
    trees = {"old": worktree(args.old, work), "new": worktree(args.new, work)}
    tokenizer = work / "tokenizer"
    if not tokenizer.exists():  # one vocabulary for both sides (trained by the new commit)
        run([sys.executable, "-m", "selfsup", "tokenizer", "--input",
             str(ROOT / "selfsup/corpora/gutenberg.jsonl.gz"), "--out", str(tokenizer)],
            trees["new"], {})  # fmt: skip
    print(f"{cpu_name()}, {os.cpu_count()} cores; old {trees['old'].name}, new "
          f"{trees['new'].name}; work folder {work}", flush=True)  # fmt: skip
    results: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(args.runs):
        order = ("old", "new") if i % 2 == 0 else ("new", "old")
        for side in order:
            r = throughput(trees[side], args.steps, args.repeats)
            r["pretrain_tok_s"] = pretrain(trees[side], args.pretrain_steps, tokenizer, work,
                                           f"{side}{i}")  # fmt: skip
            results[side].append(r)
            print(json.dumps({"run": i, "side": side, **r}), flush=True)
    keys = list(results["new"][0])
    print("\n| measure | old (median) | new (median) | new / old |\n|---|---|---|---|")
    for k in keys:
        old = statistics.median(r[k] for r in results["old"])
        new = statistics.median(r[k] for r in results["new"])
        print(f"| {k} | {old:,.2f} | {new:,.2f} | {new / old:.3f} |")


if __name__ == "__main__":
    main()
