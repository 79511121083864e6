"""The pretraining corpus of the representation recipe (issue 9): the packaged Gutenberg corpus
plus every text of ../shared/data/corpora, deduplicated, with no SST-2 text, as one .jsonl.gz.

    python experiments/recipe_corpus.py ../shared/data OUT.jsonl.gz

Paragraphs are read as `selfsup pretrain` reads them. A paragraph is dropped when it repeats
one already kept (the shared Gutenberg folder is the packaged corpus again; tinyshakespeare
re-prints parts of the three Shakespeare plays) or shares any 8-word shingle with an SST-2
sentence (train, dev or test): a paragraph is a near-duplicate when at least half of its
8-word shingles were seen before. Prints what it kept and dropped, per source.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path

from selfsup.data.readers import read_records
from selfsup.data.text import default_corpus, read_documents, resolve_files

WORD = re.compile(r"[a-z0-9]+")
N = 8  # shingle length in words


def words(text: str) -> list[str]:
    # SST-2 is tokenized ("does n't", "it 's"): split contractions alike on both sides
    return WORD.findall(text.lower().replace("n't", " not").replace("'", " "))


def shingles(ws: list[str]) -> set[int]:
    if len(ws) < N:
        return {hash(" ".join(ws))} if ws else set()
    return {hash(" ".join(ws[i : i + N])) for i in range(len(ws) - N + 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="../shared/data")
    ap.add_argument("out", help="output .jsonl.gz")
    args = ap.parse_args(argv)
    data = Path(args.data)
    sst = set()
    for split in ("train.tsv", "dev.tsv", "test-labeled.tsv"):
        for _, row in read_records(data / "glue" / "SST-2" / split, require=("sentence",)):
            sst |= shingles(words(row["sentence"]))
    sources = [default_corpus()] + [
        str(f) for f in resolve_files([str(data / "corpora")])
        if not f.name.startswith(("README", "SOURCE"))  # licence and provenance notes
    ]  # fmt: skip
    seen: set[int] = set()
    docs, report = [], []
    for src in sources:
        kept = dup = sst_hit = n_words = 0
        try:  # a few Gutenberg files of the shared folder are latin-1
            open(src, encoding="utf-8").read() if not src.endswith(".gz") else None
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding = "latin-1"
        for d, doc in enumerate(read_documents([src], encoding=encoding)):
            paras = []
            for para in doc:
                ws = words(para)
                sh = shingles(ws)
                if not sh:
                    continue
                if sh & sst:
                    sst_hit += 1
                    continue
                if len(sh & seen) * 2 >= len(sh):
                    dup += 1
                    continue
                seen |= sh
                paras.append(para)
                kept += 1
                n_words += len(ws)
            if paras:
                docs.append({"title": f"{Path(src).name}#{d}", "text": "\n\n".join(paras)})
        report.append((src, kept, dup, sst_hit, n_words))
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    tmp.replace(out)
    print("| source | paragraphs kept | near-duplicates dropped | SST-2 overlap dropped | words |")
    print("|---|---|---|---|---|")
    for src, kept, dup, hit, n in report:
        print(f"| {Path(src).parent.name}/{Path(src).name} | {kept} | {dup} | {hit} | {n} |")
    total = sum(r[4] for r in report)
    print(f"{len(docs)} documents, {total} words -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
