"""Write the committed splice split, selfsup/eval/splits/splice.json, from the shared data
(../shared/data beside the repository, or --data): the rules are in selfsup/eval/splice.py.

    python experiments/make_splice_split.py [--data ../shared/data] [--out selfsup/eval/splits]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.eval.splice import SPLIT_FILE, dump_split, make_split

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
OUT = REPO / "selfsup" / "eval" / "splits"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    dna = args.data / "dna"
    split = make_split(dna / "splice", dna / "pretrain-human-chrX", seed=0)
    path = args.out / SPLIT_FILE
    path.write_text(dump_split(split))
    print(f"wrote {path}: {split['counts']}")
    print({k: len(v) for k, v in split["dropped"].items()})


if __name__ == "__main__":
    main()
