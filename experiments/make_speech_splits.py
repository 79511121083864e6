"""Write the committed speech splits, selfsup/eval/splits/{fsdd,timit_sample,yesno}.json, from
the shared data (../shared/data beside the repository, or --data).

    python experiments/make_speech_splits.py [--data ../shared/data] [--out selfsup/eval/splits]

Deterministic: files are listed sorted, and every "random" choice orders candidates by the
SHA-256 of SEED and their name (no RNG whose algorithm could change between Python versions).
Paths in the splits are relative to the dataset's folder. The rules are in each file's "note".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

SEED = 0
REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
OUT = REPO / "selfsup" / "eval" / "splits"

# TIMIT 61 -> 39 phone folding (Lee & Hon 1989, "Speaker-independent phone recognition using
# hidden Markov models", IEEE TASSP 37(11), Table I; the map TIMIT phone-recognition recipes
# use): the closures, pauses, epenthetic silence and h# all become one silence `sil`; the glottal
# stop q is deleted (None: drop its segments before scoring). Every other phone maps to itself.
FOLD39_MERGES = {
    "ao": "aa",
    "ax": "ah",
    "ax-h": "ah",
    "axr": "er",
    "hv": "hh",
    "ix": "ih",
    "el": "l",
    "em": "m",
    "en": "n",
    "nx": "n",
    "eng": "ng",
    "zh": "sh",
    "ux": "uw",
    "bcl": "sil",
    "dcl": "sil",
    "gcl": "sil",
    "pcl": "sil",
    "tcl": "sil",
    "kcl": "sil",
    "h#": "sil",
    "pau": "sil",
    "epi": "sil",
    "q": None,
}
TIMIT61 = (
    "iy ih eh ey ae aa aw ay ah ao oy ow uh uw ux er ax ix axr ax-h "  # vowels
    "jh ch b d g p t k dx "  # affricates, stops, flap
    "s sh z zh f th v dh "  # fricatives
    "m n ng em nx en eng "  # nasals
    "l r w y hh hv el "  # semivowels, glides
    "bcl dcl gcl pcl tcl kcl q pau epi h#"  # closures, glottal stop, silences
).split()
FOLD39 = {p: FOLD39_MERGES.get(p, p) for p in TIMIT61}


def order(items, salt: str) -> list:
    """`items` in a fixed pseudo-random order: by SHA-256 of SEED, salt and the item."""
    key = lambda x: hashlib.sha256(f"{SEED}:{salt}:{x}".encode()).hexdigest()  # noqa: E731
    return sorted(items, key=key)


def fsdd(root: Path) -> dict:
    names = sorted(p.name for p in (root / "recordings").glob("*.wav"))
    parsed = [re.fullmatch(r"(\d)_(\w+?)_(\d+)\.wav", n) for n in names]
    files = [(f"recordings/{n}", m[2], int(m[3])) for n, m in zip(names, parsed, strict=True)]
    speakers = sorted({s for _, s, _ in files})
    test = [f for f, _, i in files if i < 5]
    train = [f for f, _, i in files if i >= 5]
    folds = []
    for k, s in enumerate(speakers):
        d = speakers[(k + 1) % len(speakers)]
        folds.append(
            {
                "test_speaker": s,
                "dev_speaker": d,
                "train": [f for f, sp, i in files if sp not in (s, d) and i >= 5],
                "dev": [f for f, sp, i in files if sp == d and i >= 5],
                "test": [f for f, sp, i in files if sp == s and i < 5],
            }
        )
    note = (
        "Index 0-4 (the official test files, upstream README) are test files only, in every "
        "task; every train, dev and pretrain list uses index 5-49. official: the upstream split "
        "(speakers shared between train and test). folds: keyword spotting leave-one-speaker-out, "
        "one fold per speaker: test = the held-out speaker's index 0-4 files (50; report the "
        "mean over folds, or pool the 300), dev = the next speaker in sorted order (cyclic), "
        "its index 5-49 files, so dev is an unseen speaker as the test is; train = index 5-49 "
        "of the other 4 speakers. The held-out speaker's index 5-49 files are in no list of its "
        "fold. pretrain = the official train files (index 5-49 of all 6 speakers): pretraining "
        "never sees a test file of any task, but it does hear each fold's test speaker (other "
        "utterances, unlabelled); a strictly speaker-independent pretraining would pretrain once "
        "per fold on that fold's train + dev."
    )
    return {
        "dataset": "fsdd",
        "note": note,
        "speakers": speakers,
        "official": {"train": train, "test": test},
        "folds": folds,
        "pretrain": train,
        "counts": {
            "official": {"train": len(train), "test": len(test)},
            "fold": {k: len(folds[0][k]) for k in ("train", "dev", "test")},
            "pretrain": len(train),
        },
    }


def timit_sample(root: Path) -> dict:
    speakers = sorted(p.name for p in root.glob("dr*-*") if p.is_dir())
    utts = {s: sorted(p.stem for p in (root / s).glob("*.wav")) for s in speakers}
    sex = {s: s.split("-")[1][0] for s in speakers}  # the TIMIT folder letter: f or m
    region = {s: s.split("-")[0] for s in speakers}
    path = lambda s, u: f"{s}/{u}.wav"  # noqa: E731

    # sid: per speaker 1 of the 3 si and 2 of the 5 sx utterances are test; sa1/sa2 stay train.
    sid_train, sid_test = [], []
    for s in speakers:
        si = order([u for u in utts[s] if u.startswith("si")], f"sid:si:{s}")
        sx = order([u for u in utts[s] if u.startswith("sx")], f"sid:sx:{s}")
        test = set(si[:1] + sx[:2])
        sid_test += [path(s, u) for u in utts[s] if u in test]
        sid_train += [path(s, u) for u in utts[s] if u not in test]

    # pr: 4 test speakers, 2 f + 2 m, from 4 different dialect regions (so every region keeps a
    # train speaker); dev = 1 f + 1 m train speakers from two regions.
    regions = order(sorted(set(region.values())), "pr:regions")[:4]
    test_speakers = sorted(
        next(s for s in speakers if region[s] == r and sex[s] == "fm"[i % 2])
        for i, r in enumerate(regions)
    )
    train_speakers = [s for s in speakers if s not in test_speakers]
    dev_f = order([s for s in train_speakers if sex[s] == "f"], "pr:dev:f")[0]
    dev_m = next(
        s
        for s in order([s for s in train_speakers if sex[s] == "m"], "pr:dev:m")
        if region[s] != region[dev_f]
    )
    dev_speakers = sorted([dev_f, dev_m])

    def pr_utts(group):  # sa1/sa2 left out, as in TIMIT phone recognition
        return [path(s, u) for s in group for u in utts[s] if not u.startswith("sa")]

    pr = {
        "train_speakers": train_speakers,
        "dev_speakers": dev_speakers,
        "test_speakers": test_speakers,
        "train": pr_utts(train_speakers),
        "dev": pr_utts(dev_speakers),
        "test": pr_utts(test_speakers),
    }
    tests = set(sid_test) | set(pr["test"])
    everything = [path(s, u) for s in speakers for u in utts[s]]
    pretrain = [p for p in everything if p not in tests]
    note = (
        "Paths are <dialect region>-<sex letter><speaker>/<utterance>.wav; the .phn alignment is "
        "beside each .wav. sid (speaker identification, 16 speakers): per speaker 3 test "
        "utterances (1 of its 3 si, 2 of its 5 sx, seeded) and 7 train, sa1 and sa2 always "
        "train: they are the same two sentences for every speaker, and the si/sx sentences of "
        "this sample are all distinct, so the test sentences are texts never heard in training. "
        "pr (phone recognition): 12 train / 4 test speakers, the test ones 2 f + 2 m from 4 "
        "dialect regions (each region keeps at least one train speaker); sa1/sa2 are left out of "
        "pr train, dev and test, as in TIMIT phone recognition (Lee & Hon 1989): 8 utterances "
        "per speaker. pr dev = 2 of the 12 train speakers (1 f, 1 m, two regions) for "
        "learning-rate sweeps: fit on train minus dev, score on dev, then fit on all of train. "
        "Score phones after fold39 (61 -> 39 classes, closures and silences one 'sil', q "
        "deleted: null). pretrain = every utterance in no test list of any task (sid or pr): "
        "the 7 sid-train utterances of the 12 pr-train speakers and sa1/sa2 of the 4 pr-test "
        "speakers (in no test list, since pr leaves sa out): pretraining hears the pr test "
        "speakers' voices in those two sentences, and all sid speakers, but no test utterance."
    )
    return {
        "dataset": "timit-sample",
        "note": note,
        "speakers": speakers,
        "sex": sex,
        "region": region,
        "sid": {"train": sid_train, "test": sid_test},
        "pr": pr,
        "pretrain": pretrain,
        "counts": {
            "utterances": len(everything),
            "sid": {"train": len(sid_train), "test": len(sid_test)},
            "pr": {k: len(pr[k]) for k in ("train", "dev", "test")},
            "pr_speakers": {k: len(pr[f"{k}_speakers"]) for k in ("train", "dev", "test")},
            "in_some_test": len(tests),
            "pretrain": len(pretrain),
        },
        "fold39": FOLD39,
    }


def yesno(root: Path) -> dict:
    names = sorted(f"waves_yesno/{p.name}" for p in (root / "waves_yesno").glob("*.wav"))
    train = [n for n in names if Path(n).name.startswith("0")]
    test = [n for n in names if Path(n).name.startswith("1")]
    note = (
        "The Kaldi egs/yesno convention (SOURCE.txt; the upstream README states no split): "
        "files whose name starts with 0 (first word 'no') are train, with 1 test. One speaker, "
        "so there is no speaker-independent split. pretrain = train."
    )
    return {
        "dataset": "yesno",
        "note": note,
        "train": train,
        "test": test,
        "pretrain": train,
        "counts": {"train": len(train), "test": len(test), "pretrain": len(train)},
    }


SPLITS = {
    "fsdd.json": ("fsdd", fsdd),
    "timit_sample.json": ("timit-sample", timit_sample),
    "yesno.json": ("yesno", yesno),
}


def build(data: Path) -> dict[str, str]:
    """{file name: JSON text} of every split, from the data folder."""
    return {
        name: json.dumps(make(data / sub), indent=1) + "\n" for name, (sub, make) in SPLITS.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON files go")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in build(args.data).items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
