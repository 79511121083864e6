"""`selfsup <command>`; bare `selfsup` lists the commands, `selfsup COMMAND --help` their options.

Each command parses its flags, calls its recipe in the library (selfsup.pretraining, finetune,
benchmark, embed, fill_mask, inspect) and prints. Bad input ends with one line
`selfsup: error: ...` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from selfsup.config import apply_overrides
from selfsup.errors import ConfigError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows each option's default, except where there is none to show (None, off, an
    empty list: the help text says what applies), and keeps the epilog's examples as written."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in action.help:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2 (argparse prints usage + message)
        raise ConfigError(message)


DEVICE_HELP = "auto (GPU when present) | cpu | cuda"


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        nargs="+",
        action="extend",
        default=None,
        metavar="PATH",
        help="text files/folders (.txt .jsonl .csv .tsv, optionally .gz), a datasets "
        "folder, or hf:NAME[:SPLIT]; audio: folders of .wav/.flac/.ogg or CSV/TSV manifests; "
        "repeat to add more; default (text): the packaged Gutenberg corpus; LANG=PATH (every "
        "entry): multilingual text, languages sampled by --lang-alpha",
    )
    p.add_argument("--text-field", default=None, help="column with the text (jsonl/csv/datasets)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the input files")
    p.add_argument("--max-len", type=int, default=None, help="tokens per sequence (128)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: train one); "
                   "units: one token per unit of `selfsup units` files; dna: dna-base | "
                   "dna-kmer3..6 | dna-kmer3..6-nonoverlap | protein (dna-kmer6)")  # fmt: skip
    p.add_argument("--vocab-size", type=int, default=None, help="vocab size when training one")
    p.add_argument("--cased", action="store_true", help="keep case (default: lower-case)")
    p.add_argument("--lang-alpha", type=float, default=None, help="LANG=PATH data: sample "
                   "language i with p_i^alpha, renormalised (XLM; 0.7, mBERT's)")  # fmt: skip
    p.add_argument("--cache-dir", default=None, help="tokenized-data cache (~/.cache/selfsup)")
    p.add_argument(
        "--pack", action="store_true", help="pack short examples into full rows (no padding)"
    )


def _add_mask_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask-prob", type=float, default=None, help="share of tokens chosen (0.15)")
    p.add_argument("--whole-word", action="store_true", help="whole-word masking")
    p.add_argument(
        "--span",
        action="store_true",
        help="contiguous span masking (SpanBERT; spans are whole words: not with --whole-word)",
    )


def _add_set_arg(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"any other setting, e.g. {example}; repeat to add more",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="selfsup",
        description="Pretrain BERT-style encoders on text; fine-tune, evaluate and use them.",
        epilog="`selfsup COMMAND --help` shows a command's options and an example.\n"
        "example: selfsup pretrain --steps 200 && selfsup fill-mask runs/latest "
        '"the [MASK] sat on the mat ."',
    )
    sub = parser.add_subparsers(
        dest="command", title="commands", metavar="COMMAND", parser_class=_Parser
    )

    p = sub.add_parser(
        "pretrain",
        help="pretrain a model on unlabelled text, speech or images",
        description="Pretrain a model on unlabelled data into a run folder (with the default\n"
        "--out, runs/latest points at it). Flags left out take the preset's values.",
        epilog="examples:\n"
        "  selfsup pretrain --preset mini --data books/ --steps 5000 --whole-word\n"
        "  selfsup pretrain --objective bart --data books/ --pack\n"
        "  selfsup pretrain --objective mockingjay --data recordings/ --steps 2000\n"
        "  selfsup pretrain --modality image --objective simclr --data cifar.zip --preset mini\n"
        "  selfsup pretrain --modality dna --data chrX.fa.gz --tokenizer dna-kmer6 --preset mini\n"
        "  selfsup pretrain --resume runs/latest --steps 8000   # continue, longer",
    )
    p.add_argument(
        "--preset",
        default=None,
        help="tiny (the default) | mini | small | medium | base (text); tiny | mini | small | "
        "base | large (audio); tiny | mini | resnet18 | vit-tiny | vit-mini (image); tiny | mini "
        "(dna)",
    )
    p.add_argument(
        "--objective",
        default=None,
        help="text: mlm | mlm+nsp (default) | mlm+sop | bart | mass | t5; audio: mockingjay | "
        "tera | apc | cpc | wav2vec | vq-wav2vec | hubert | wav2vec2; image: rotation | "
        "relpatch | pixels | simclr | byol | simsiam | barlow | vicreg; dna: mlm",
    )
    p.add_argument(
        "--modality",
        choices=("text", "audio", "image", "dna"),
        default=None,
        help="the data's modality (inferred from --objective; audio alone means mockingjay, "
        "image alone simclr, dna alone mlm on DNA or protein sequences)",
    )
    _add_data_args(p)
    _add_mask_args(p)
    p.add_argument(
        "--steps", type=int, default=None, help="optimizer steps; on --resume, may be raised"
    )
    p.add_argument("--batch-size", type=int, default=None, help="sequences per optimizer step")
    p.add_argument("--grad-accum", type=int, default=None, help="micro-batches per step (1)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps")
    p.add_argument("--schedule", default=None, help="linear | cosine | constant")
    p.add_argument("--seed", type=int, default=None, help="seed of weights, data and masks (0)")
    p.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps")
    p.add_argument(
        "--save-schedule",
        choices=("none", "log"),
        default=None,
        help="also keep the weights at scheduled steps, never pruned, in snapshots/ (log: 0, 1, "
        "2, 3, 4, 6, 8, 12, ... and the last), for `selfsup embryology` (none)",
    )
    p.add_argument("--eval-every", type=int, default=None, help="held-out eval every N steps")
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default=None,
        help="auto (the default: bf16 autocast where the hardware has native bf16, else fp32; "
        "$SELFSUP_PRECISION overrides auto) | bf16 | fp32; a resumed run keeps its own",
    )
    p.add_argument(
        "--bf16", dest="precision", action="store_const", const="bf16", help="--precision bf16"
    )
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard the model over the processes (FSDP2) instead of DDP",
    )
    p.add_argument("--workers", type=int, default=None, help="data worker processes (0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--out", default=None, help="run folder (default runs/PRESET-OBJ-TIME)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="RUN",
        help="continue the run in --out (or RUN) from its latest checkpoint, with its saved "
        "settings; it may change --steps, --fsdp, --device, --threads, --workers, --compile, "
        "--save-every, --save-schedule, --eval-every (others are refused)",
    )
    _add_set_arg(p, "train.weight_decay=0.1 objective.random_prob=0")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--labels", default=None, help="hubert: the labels folder of `selfsup cluster`")
    p.add_argument("--init", default=None, metavar="FOLDER", help="wav2vec2: start from an HF "
                   "wav2vec 2.0 folder's weights and shape (continued pretraining; the preset "
                   "gives the training settings, --set applies on top)")  # fmt: skip

    p = sub.add_parser(
        "tokenizer",
        help="train a WordPiece tokenizer",
        epilog="example: selfsup tokenizer --input books/ --vocab-size 16000 --out tok/",
    )
    p.add_argument(
        "--input",
        nargs="+",
        action="extend",
        required=True,
        metavar="PATH",
        help="text files/folders, as pretrain --data reads them; LANG=PATH (each of them): a "
        "multilingual tokenizer (no accent stripping, Thai/Lao/Khmer/Myanmar split into "
        "character clusters), each language's words weighted by --lang-alpha",
    )
    p.add_argument("--vocab-size", type=int, default=8192, help="tokens in the vocabulary")
    p.add_argument("--lang-alpha", type=float, default=0.7, help="LANG=PATH: weigh language i's "
                   "word counts to a share p_i^alpha, renormalised (mBERT: 0.7)")  # fmt: skip
    p.add_argument("--cased", action="store_true", help="keep case (default: lower-case)")
    p.add_argument("--text-field", default="text", help="column with the text (jsonl/csv)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the input files")
    p.add_argument("--out", required=True, help="new tokenizer folder")

    p = sub.add_parser(
        "fill-mask",
        help="predict the [MASK] tokens of a sentence",
        epilog='example: selfsup fill-mask runs/latest "the old sailor [MASK] to the river ."',
    )
    p.add_argument("model", help="a selfsup run or HF BERT folder with an MLM head")
    p.add_argument("text", help='text with one or more [MASK], e.g. "a dark and stormy [MASK] ."')
    p.add_argument("--top-k", type=int, default=5, help="predictions per [MASK]")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "export", help="export a run, HF or fine-tuned folder for transformers (hf) or onnxruntime"
    )
    p.add_argument("model", help="a selfsup run (text, or speech with a wav2vec2 / hubert "
                   "encoder), a HF BERT folder or a `selfsup finetune` folder")  # fmt: skip
    p.add_argument(
        "--format",
        default="hf",
        choices=["hf", "onnx"],
        help="hf: a transformers folder (BertForPreTraining, BertModel, BertFor<task> with its "
        "labels); onnx: model.onnx (dynamic batch and sequence) + tokenizer + config.json",
    )
    p.add_argument("--out", required=True)

    p = sub.add_parser(
        "embed",
        help="embed sentences, a row per line (blank ones too), to .npy (tokens: .npz); or "
        "audio files with a speech model",
        epilog="examples:\n"
        "  selfsup embed runs/latest --input sentences.txt --out vectors.npy\n"
        "  selfsup embed runs/mockingjay --input recordings/ --out clips.npz --pooling frames",
    )
    p.add_argument("model", help="a text model folder, a speech run, an HF wav2vec2 / hubert "
                   "folder, or fbank | mfcc")  # fmt: skip
    p.add_argument("--input", required=True, help="text: one sentence per line; audio: a folder "
                   "of audio files or a CSV/TSV manifest")  # fmt: skip
    p.add_argument("--out", required=True)
    p.add_argument(
        "--pooling",
        default=None,
        choices=["mean", "cls", "tokens", "frames"],
        help="default: the folder's sentence-transformers pooling, else mean; frames: every "
        "frame's vector of an audio file (.npz)",
    )
    p.add_argument("--layer", type=int, default=-1, help="audio: the layer to embed (-1: last)")
    p.add_argument("--cache-dir", default=None, help="audio: feature cache (~/.cache/selfsup)")
    p.add_argument("--batch-size", type=int, default=None, help="sentences per batch (64)")
    p.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="default: the folder's max_seq_length, else the model's max_len",
    )
    p.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalise the vectors (default: as the folder's modules.json says)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the encoder (pays off on large inputs)",
    )
    _add_inference_precision(p, "the encoder")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="batches encoded at once, one CPU thread each (default: one per thread on CPU)",
    )
    p.add_argument("--plot", default=None, metavar="PNG", help="text: also a t-SNE map of the "
                   "sentence vectors (sklearn), coloured by --label-column")  # fmt: skip
    p.add_argument("--label-column", default=None, metavar="COL",
                   help="text: --input is a table (CSV/TSV with a header, JSON lines); COL "
                   "labels its rows for --plot")  # fmt: skip
    p.add_argument("--text-column", default=None, metavar="COL",
                   help="text: the table's column to embed (text)")  # fmt: skip

    p = sub.add_parser(
        "generate",
        help="restore or continue text with an encoder-decoder run (bart, mass)",
        epilog='example: selfsup generate runs/bart "the old [MASK] went to the river ." --beams 4',
    )
    p.add_argument("model", help="an encoder-decoder run (selfsup pretrain --objective bart|mass)")
    p.add_argument("text", nargs="*", help="texts, [MASK] where something is missing")
    p.add_argument("--file", default=None, help="a text file: one input per line (instead)")
    p.add_argument("--out", default=None, help="JSON-lines file, written when every row is done")
    p.add_argument("--beams", type=int, default=1, help="beam search width (1: greedy)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens written, EOS included")
    p.add_argument("--min-new-tokens", type=int, default=0)
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score / length^this")
    p.add_argument("--no-repeat-ngram", type=int, default=0, help="never repeat an n-gram (0: off)")
    p.add_argument("--sample", action="store_true", help="sample instead of the most likely")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--seed", type=int, default=0, help="for --sample")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true", help="print a JSON line per input")

    p = sub.add_parser("predict", help="label a file with a fine-tuned model: one JSON line a row")
    p.add_argument("model", help="a `selfsup finetune` output folder")
    p.add_argument(
        "--input",
        required=True,
        help=".txt (a row per line) .csv .tsv .jsonl, SQuAD; a speech classifier: a folder of "
        "audio files or a CSV/TSV manifest",
    )
    p.add_argument("--out", required=True, help="JSON-lines file, written when every row is done")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--top-k", type=int, default=None, help="labels listed per row (default: all)")
    p.add_argument("--text-column", default=None, help="default: the fine-tuning's, else text")
    p.add_argument(
        "--text-pair-column", default=None, help="default: the fine-tuning's, else text_pair"
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    _add_inference_precision(p, "the forwards")
    p.add_argument("--cache-dir", default=None, help="a speech classifier: feature cache")

    p = sub.add_parser(
        "inspect-masking",
        help="realised masking statistics for a corpus",
        epilog="example: selfsup inspect-masking --data books/ --span --batches 20 --json",
    )
    _add_data_args(p)
    _add_mask_args(p)
    p.add_argument(
        "--objective",
        default="mlm",
        help="mlm | mlm+nsp | mlm+sop | bart | mass | t5 | mockingjay | tera",
    )
    p.add_argument("--batches", type=int, default=50, help="batches to count over")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the batches and masks")
    _add_set_arg(p, "objective.span_p=0.3")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "superb",
        help="probe frozen speech upstreams on a small SUPERB (ks, sid, pr) or your own labels",
        description="Freeze each upstream, learn a softmax-weighted sum of its layers and a small "
        "head per task\n(a learning-rate sweep on dev, then --seeds seeds); print a table.",
        epilog="examples:\n"
        "  selfsup superb fbank runs/mockingjay random:runs/mockingjay --task all "
        "--data-root ../shared/data\n"
        "  selfsup superb runs/tera --task classify --data clips/ --pattern "
        "'{label}_{speaker}_{index}'",
    )
    p.add_argument("upstream", nargs="+", help="fbank | mfcc | fbank+cmvn | mfcc+cmvn | RUN | "
                   "HF_FOLDER (wav2vec2, hubert) | random:RUN | random:HF_FOLDER")  # fmt: skip
    p.add_argument("--task", "--tasks", dest="tasks", nargs="+", action="extend", default=None,
                   help="ks | sid | sid-fsdd | pr (pr-frame, pr-ctc) | all | classify")  # fmt: skip
    p.add_argument(
        "--data-root",
        default=os.environ.get("SELFSUP_DATA"),
        help="the folder holding fsdd/ and timit-sample/ (default $SELFSUP_DATA)",
    )
    p.add_argument("--data", default=None, help="classify: a folder or CSV/TSV manifest")
    p.add_argument("--pattern", default=None, help="classify: file-name fields, e.g. "
                   "'{label}_{speaker}_{index}'")  # fmt: skip
    p.add_argument("--label-column", default="label", help="classify: the label column/field")
    p.add_argument("--seeds", type=int, default=3, help="probe seeds (ks: the 6 folds instead)")
    p.add_argument("--epochs", type=int, default=None, help="probe epochs (default per task)")
    p.add_argument("--lrs", type=float, nargs="+", default=None, help="swept learning rates")
    p.add_argument("--out", default=None, help="folder for superb.json and layer-weight plots")
    p.add_argument("--cache-dir", default=None, help="feature cache (~/.cache/selfsup)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: the small probes run fastest on one)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    _add_cluster_parser(sub)
    _add_units_parser(sub)
    _add_probe_parser(sub)
    _add_align_parser(sub)
    _add_contextual_parser(sub)
    _add_embryology_parser(sub)
    _add_dna_splice_parser(sub)
    _add_finetune_parsers(sub)
    for name, example in EXAMPLES.items():  # commands whose block sets no epilog of its own
        if sub.choices[name].epilog is None:
            sub.choices[name].epilog = f"example: {example}"
    return parser


EXAMPLES = {
    "pretrain": "selfsup pretrain --data books/ --preset mini --steps 2000 --out runs/mini",
    "export": "selfsup export ft/sst2 --format onnx --out sst2-onnx/",
    "embed": "selfsup embed runs/latest --input sentences.txt --out vectors.npy --pooling mean",
    "predict": "selfsup predict ft/sst2 --input reviews.txt --out pred.jsonl --top-k 1",
    "finetune": "selfsup finetune --task classify --data reviews.csv --text-column review "
    "--label-column stars --init runs/latest --out ft/reviews",
    "evaluate": "selfsup evaluate ft/sst2 --task sst2 --data glue/SST-2 --split dev",
    "glue": "selfsup glue --init runs/latest --data glue/ --seeds 0 1 2 --out glue-run",
    "clue": "selfsup clue --init runs/latest --data clue/ --seeds 0 1 2 --out clue-run",
    "compare": "selfsup compare --init pre=runs/latest --init scratch --tokenizer runs/latest "
    "--task sst2 --data glue/SST-2 --seeds 0 1 2 --out cmp",
}


def _add_finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task", required=True, help="cola sst2 mrpc ... pos squad ... classify tag audio-classify"
    )
    p.add_argument("--data", required=True, help="task folder or file")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the training set")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (linear decay)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step")
    p.add_argument("--max-len", type=int, default=128, help="tokens per example (longer: cut)")
    _add_inference_precision(p, "training and dev evaluation")
    p.add_argument("--preset", default=None, help="architecture for --init scratch")
    p.add_argument("--tokenizer", default=None, help="tokenizer (folder or run) for scratch")
    p.add_argument("--eval-every", type=int, default=0, help="dev evaluation every N steps")
    p.add_argument("--train-limit", type=int, default=0, help="use at most N training examples")
    p.add_argument(
        "--article-holdout",
        type=float,
        default=0.0,
        help="QA from one file: hold out this share of articles for evaluation",
    )
    p.add_argument(
        "--dev-fraction",
        type=float,
        default=0.1,
        help="one labelled file and no --dev: score on this seeded share of its rows, held out",
    )
    p.add_argument("--dev", default=None, help="a separate labelled file (or folder) to score on")
    p.add_argument(
        "--keep",
        default="best",
        choices=["best", "last"],
        help="the weights of the evaluation with the best dev metric, or the last ones",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=0,
        help="stop after N dev evaluations without a better main metric (0: never)",
    )
    p.add_argument(
        "--class-weights",
        default=None,
        choices=["balanced"],
        help="classify: weigh each class's loss by n / (classes * its count in training)",
    )
    p.add_argument("--text-column", default=None)
    p.add_argument("--text-pair-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--source-column", default=None, help="seq2seq: the input text (source)")
    p.add_argument("--target-column", default=None, help="seq2seq: the text to write (target)")
    p.add_argument("--beams", type=int, default=1, help="seq2seq: beam width of dev decoding")
    p.add_argument("--max-target-len", type=int, default=64, help="seq2seq: target tokens")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="seq2seq: epsilon")
    p.add_argument("--tagset", default=None, help="pos/tag: upos (default) or xpos")
    p.add_argument("--xpos", action="store_true", help="pos: predict XPOS instead of UPOS")
    p.add_argument("--lang", default=None, help="xquad: language (en, zh, ...)")
    _add_clue_file_args(p)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _add_inference_precision(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--precision", default="fp32", choices=("fp32", "bf16", "auto"),
        help=f"of {what}: fp32, bf16 autocast (needs native bf16), or auto (bf16 where the "
        "hardware has it)",
    )  # fmt: skip


def _add_clue_file_args(p: argparse.ArgumentParser) -> None:
    """The CLUE options that pick a file: tnews' FewCLUE fold, ocnli's training subset."""
    p.add_argument("--fold", default=None, choices=[*"01234", "all"],
                   help="tnews: FewCLUE fold 0-4 or all (default 0)")  # fmt: skip
    p.add_argument("--ocnli-train", default=None, choices=["10k", "3k"],
                   help="ocnli: training subset (default 10k)")  # fmt: skip


def _add_finetune_parsers(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model on a task and evaluate on dev")
    p.add_argument("--init", required=True, help="selfsup run, HF BERT folder, or scratch; "
                   "audio-classify: a speech run, an HF wav2vec2 / hubert folder, random:RUN or "
                   "scratch")  # fmt: skip
    _add_finetune_args(p)
    _add_audio_task_args(p)
    p.add_argument(
        "--max-frames", type=int, default=None,
        help="audio-classify: input frames (samples for a waveform encoder) per clip, a longer "
        "one read from its start (default 10 s: 1000 frames, 160000 samples)",
    )  # fmt: skip
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout while fine-tuning (default 0.1); 0 under torchrun trains exactly "
                   "as one process")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = sub.add_parser("evaluate", help="evaluate a fine-tuned folder; prints metrics as JSON")
    p.add_argument("model")
    p.add_argument("--task", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="dev")
    for name in ("--text-column", "--text-pair-column", "--label-column", "--tagset", "--lang",
                 "--source-column", "--target-column"):  # fmt: skip
        p.add_argument(name, default=None)
    p.add_argument("--beams", type=int, default=None, help="seq2seq: default the fine-tuning's")
    p.add_argument("--xpos", action="store_true")
    _add_audio_task_args(p)
    _add_clue_file_args(p)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    _add_inference_precision(p, "the forwards")

    p = sub.add_parser("glue", help="every GLUE task found in a folder, several seeds: a table")
    p.add_argument("--init", required=True)
    p.add_argument("--data", required=True, help="folder holding CoLA/ SST-2/ MRPC/ ...")
    _add_suite_args(p)

    p = sub.add_parser("clue", help="every CLUE task found in folders, several seeds: a table")
    p.add_argument("--init", required=True)
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="folders holding (or being) ocnli/ tnews-fewclue/ chinese-sentiment/ cmrc2018/",
    )
    p.add_argument("--fold", default="0", help="tnews: FewCLUE fold 0-4 or all (default 0)")
    p.add_argument("--ocnli-train", default="10k", help="ocnli: training subset 10k | 3k")
    _add_suite_args(p)

    p = sub.add_parser("compare", help="fine-tune several inits with the same settings and seeds")
    p.add_argument("--init", action="append", required=True, help="repeat: --init A --init B")
    _add_finetune_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", required=True)


def _add_audio_task_args(p: argparse.ArgumentParser) -> None:
    """The flags of --task audio-classify that say where labels and speakers are."""
    p.add_argument(
        "--pattern",
        default=None,
        help="audio-classify: fields of the file names, e.g. '{label}_{speaker}_{index}' "
        "(--label-column names the label's field, default label)",
    )
    p.add_argument(
        "--speaker-column",
        default=None,
        help="audio-classify: the speaker column or field (default speaker); a speaker's files "
        "stay in one of train/dev/test",
    )
    p.add_argument("--cache-dir", default=None, help="audio-classify: feature cache")


def _add_suite_args(p: argparse.ArgumentParser) -> None:
    """The flags `glue` and `clue` share: tasks, seeds and one fine-tuning setting for all."""
    p.add_argument("--tasks", nargs="+", default=None, help="subset of tasks")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--train-limit", type=int, default=0)
    p.add_argument("--preset", default=None)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    _add_inference_precision(p, "training and dev evaluation")
    p.add_argument("--out", required=True)


def _run_config(args, base=None):
    """The RunConfig the flags ask for: set on top of `base` (a resumed run's saved config) or
    of the preset. A flag not given leaves its setting as it is."""
    from selfsup.config import modality_of
    from selfsup.objectives import get_objective, resolve_name
    from selfsup.presets import preset

    modality = getattr(args, "modality", None)
    if args.objective is not None:
        args.objective = resolve_name(args.objective, modality)  # vicreg on audio: DeLoRes
        own = modality_of(get_objective(args.objective))
        if modality is not None and modality != own:
            raise ConfigError(f"objective {args.objective} is a {own} objective, not {modality}")
        modality = own
    cfg = base or preset(getattr(args, "preset", None) or "tiny", modality or "text")
    if base is not None and getattr(args, "preset", None) not in (None, cfg.preset):
        cfg.preset = args.preset  # refused by the resume check, by name
    if args.objective is not None and args.objective != cfg.objective.name:
        cfg.set_objective(args.objective)
    if args.command == "pretrain" and args.init is not None:
        from selfsup.pretraining_init import init_config

        init_config(cfg, args.init)  # the folder's model and sizes; flags and --set apply after
    d, t = cfg.data, cfg.train
    pairs = [
        (d, "paths", args.data), (d, "text_field", args.text_field), (d, "max_len", args.max_len),
        (d, "tokenizer", args.tokenizer), (cfg.model, "vocab_size", args.vocab_size),
        (d, "cache_dir", args.cache_dir), (t, "seed", args.seed),
        (d, "lang_alpha", getattr(args, "lang_alpha", None)),
        (t, "batch_size", getattr(args, "batch_size", None)),
    ]  # fmt: skip
    if args.command == "pretrain":
        pairs += [
            (t, "steps", args.steps), (t, "grad_accum", args.grad_accum), (t, "lr", args.lr),
            (t, "warmup_steps", args.warmup_steps), (t, "schedule", args.schedule),
            (t, "save_every", args.save_every), (t, "eval_every", args.eval_every),
            (t, "save_schedule", args.save_schedule),
            (t, "threads", args.threads), (d, "num_workers", args.workers),
            (t, "device", getattr(args, "device", None)), (d, "labels", args.labels),
        ]  # fmt: skip
        if args.precision is not None and not (base is not None and args.precision == "auto"):
            t.precision = args.precision  # resuming, auto means the run's own
        if args.fsdp:
            t.fsdp = True
        if args.compile:
            t.compile = True
    for obj, name, value in pairs:
        if value is not None:
            _set_option(obj, name, value)
    if args.cased:
        _set_option(d, "lowercase", False)
    if getattr(args, "pack", False):
        _set_option(d, "pack", True)
    for flag, name, value in (
        ("--mask-prob", "mask_prob", args.mask_prob),
        ("--whole-word", "whole_word", args.whole_word or None),
        ("--span", "span", args.span or None),
    ):
        if value is not None:
            _set_objective_option(cfg, flag, name, value)
    apply_overrides(cfg, args.set)
    if args.command == "pretrain" and base is None and 0 < t.steps <= t.warmup_steps:
        # In the run's log (stdout), not stderr: stderr holds one line, the error, if any.
        warmup = t.steps // 10
        print(f"warning: {t.warmup_steps} warm-up steps do not fit {t.steps} steps: using {warmup}")
        t.warmup_steps = warmup
    cfg.validate()
    return cfg


def _set_option(section, name: str, value) -> None:
    """Set a flag's field of a config section; a one-line error where the section (the data or
    model of another modality) has no such field."""
    if not hasattr(section, name):
        flag = {"paths": "data", "lowercase": "cased"}.get(name, name).replace("_", "-")
        raise ConfigError(f"--{flag} does not apply to {type(section).__name__}")
    setattr(section, name, value)


def _set_objective_option(cfg, flag: str, name: str, value) -> None:
    if not hasattr(cfg.objective, name):
        raise ConfigError(f"{flag} is not an option of objective {cfg.objective.name}")
    setattr(cfg.objective, name, value)


def cmd_pretrain(args) -> dict:
    from selfsup.pretraining import pretrain, saved_config

    resume = args.resume is not None
    out = args.resume or args.out
    if resume and not out:
        raise ConfigError("--resume needs a run folder: --resume RUN or --out RUN --resume")
    if resume and args.init is not None:
        raise ConfigError("--init starts a new run from a folder's weights; --resume continues "
                          "a run from its checkpoint: give one of them")  # fmt: skip
    # Resuming, the flags given change the saved config (pretrain refuses what it cannot apply).
    cfg = _run_config(args, saved_config(Path(out)) if resume else None)
    if resume:
        cfg.train.fsdp = args.fsdp  # a resumed run chooses DDP or FSDP2 again
    latest = None
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = f"runs/{cfg.preset}-{cfg.objective.name.replace('+', '-')}-{stamp}"
        latest = Path("runs") / "latest"
    try:
        return pretrain(
            cfg,
            Path(out),
            resume=resume,
            encoding=args.encoding,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    finally:
        if latest is not None and Path(out).is_dir():  # a run was made (finished or resumable)
            _point_latest(latest, Path(out))


def _point_latest(link: Path, run: Path) -> None:
    """runs/latest -> the newest run made with the default --out: a relative symlink, or a text
    file holding the run's path where the filesystem has no symlinks."""
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(run.name, tmp, target_is_directory=True)
    except OSError:
        tmp.write_text(f"{run}\n")
    try:
        os.replace(tmp, link)
    except OSError:  # runs/latest is a folder of the user's: leave it
        tmp.unlink(missing_ok=True)


def cmd_tokenizer(args) -> None:
    from selfsup.pretraining import tokenizer_from_files

    tok = tokenizer_from_files(
        args.input, args.out, args.vocab_size, not args.cased, args.text_field, args.encoding,
        args.lang_alpha,
    )  # fmt: skip
    print(f"saved a WordPiece tokenizer with {tok.vocab_size} tokens to {args.out}")


def cmd_fill_mask(args) -> None:
    from selfsup.fill_mask import fill_mask

    results = fill_mask(args.model, args.text, args.top_k)
    if args.json:
        print(json.dumps({"text": args.text, "masks": results}))
        return
    for n, res in enumerate(results):
        if len(results) > 1:
            print(f"[MASK] #{n + 1}")
        for r in res:
            print(f"{r['prob']:8.4f}  {r['token']}")


def cmd_export(args) -> None:
    from selfsup.export import export_model

    what = export_model(args.model, args.out, args.format)
    print(f"exported to {args.out}: {what}")


def cmd_embed(args) -> None:
    from selfsup.embed import embed_file
    from selfsup.embed_audio import embed_audio_file, is_audio_model

    if is_audio_model(args.model):  # a speech run or baseline: --input is audio files
        n, shape = embed_audio_file(
            args.model, args.input, args.out, args.pooling, args.batch_size, args.layer,
            args.cache_dir,
        )  # fmt: skip
        print(f"embedded {n} audio files -> {args.out} {shape}")
        return
    if args.pooling == "frames" or args.layer != -1:
        raise ConfigError("--pooling frames and --layer are for audio models")
    table = {"plot": args.plot, "label_column": args.label_column,
             "text_column": args.text_column}  # fmt: skip
    n, shape = embed_file(
        args.model,
        args.input,
        args.out,
        args.pooling,
        args.batch_size,
        args.max_len,
        args.normalize,
        args.compile,
        args.workers,
        args.precision,
        **table,
    )
    print(f"embedded {n} sentences -> {args.out} {shape}")
    if args.plot:
        print(f"t-SNE map -> {args.plot}")


def cmd_predict(args) -> None:
    from selfsup.label import predict_file
    from selfsup.models import is_audio_classifier

    if is_audio_classifier(args.model):  # a speech classifier: --input is audio files
        from selfsup.finetune_audio import predict_audio_file

        res = predict_audio_file(
            args.model, args.input, args.out, args.batch_size, args.top_k, args.device,
            args.precision, args.cache_dir, log=lambda m: print(m, file=sys.stderr),
        )  # fmt: skip
        print(f"predicted {res['rows']} files ({res['kind']}) -> {args.out}")
        return
    res = predict_file(
        args.model, args.input, args.out, args.batch_size, args.top_k, args.device,
        args.text_column, args.text_pair_column, log=lambda m: print(m, file=sys.stderr),
        precision=args.precision,
    )  # fmt: skip
    print(f"predicted {res['rows']} rows ({res['kind']}) -> {args.out}; "
          + (res["note"] or "nothing truncated"))  # fmt: skip


def cmd_generate(args) -> None:
    from selfsup.checkpoint import atomic_write_text
    from selfsup.generate import GenerateConfig, generate_text
    from selfsup.paths import check_out_file

    if bool(args.text) == bool(args.file):
        raise ConfigError("give texts or --file (one of them)")
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise ConfigError(f"no such file: {args.file}")
        from selfsup.data.readers import read_lines

        texts = list(read_lines(path))  # (.gz too; unreadable text is a one-line error)
    else:
        texts = args.text
    out = check_out_file(args.out, "generated.jsonl") if args.out else None
    cfg = GenerateConfig(
        args.max_new_tokens, args.min_new_tokens, args.beams, args.length_penalty,
        args.no_repeat_ngram, args.sample, args.temperature, args.top_k, args.top_p,
    )  # fmt: skip
    rows = generate_text(args.model, texts, cfg, args.batch_size, args.seed,
                         log=lambda m: print(m, file=sys.stderr))  # fmt: skip
    if out is not None:
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"generated {len(rows)} rows -> {out}")
        return
    for r in rows:
        print(json.dumps(r, ensure_ascii=False) if args.json else r["output"])


def cmd_inspect_masking(args) -> None:
    from selfsup.inspect import inspect_masking

    if args.batches < 1:
        raise ConfigError(f"--batches must be at least 1, got {args.batches}")
    stats = inspect_masking(_run_config(args), args.batches, args.encoding)
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
        return
    pairs = stats.pop("pairs", [])
    for k, v in stats.items():
        print(f"{k:28s} {v}")
    for n, pair in enumerate(pairs, 1):
        print(f"example {n} corrupted: {pair['source']}")
        print(f"example {n} original:  {pair['target']}")


def _task_options(args) -> dict:
    opts = {}
    for name in ("text_column", "text_pair_column", "label_column", "tagset", "lang"):
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    for flag, name in (("source_column", "text_column"), ("target_column", "label_column")):
        value = getattr(args, flag, None)
        if value is not None:  # seq2seq's names for the table columns
            opts[name] = value
    if getattr(args, "xpos", False):
        opts["tagset"] = "xpos"
    for flag, name, value in (
        ("--fold", "fold", getattr(args, "fold", None)),
        ("--ocnli-train", "train_size", getattr(args, "ocnli_train", None)),
    ):
        if value is not None:
            from selfsup.data.tasks import get_task

            if name not in get_task(args.task).options:
                owner = "tnews" if name == "fold" else "ocnli"
                raise ConfigError(f"{flag} is for task {owner}, not {args.task}")
            opts[name] = value
    return opts


def _finetune_settings(args) -> dict:
    """FinetuneConfig fields from the finetune/compare flags (all but task, data, init, out and
    seed)."""
    return dict(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, max_len=args.max_len,
        preset=args.preset, tokenizer=args.tokenizer, eval_every=args.eval_every,
        train_limit=args.train_limit, article_holdout=args.article_holdout,
        dev_fraction=args.dev_fraction, dev=args.dev, keep=args.keep, patience=args.patience,
        class_weights=args.class_weights, options=_task_options(args), device=args.device,
        precision=args.precision, beams=args.beams, max_target_len=args.max_target_len,
        label_smoothing=args.label_smoothing,
    )  # fmt: skip


def _audio_options(args) -> dict:
    """FinetuneConfig.options of --task audio-classify; its flags refused for other tasks."""
    audio = {name: getattr(args, name, None)
             for name in ("pattern", "speaker_column", "max_frames", "cache_dir")}  # fmt: skip
    given = {k: v for k, v in audio.items() if v is not None}
    if args.task != "audio-classify":
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ConfigError(f"{flags}: for --task audio-classify, not {args.task}")
        return {}
    return given


def cmd_finetune(args) -> dict:
    from selfsup.finetuning import FinetuneConfig, finetune, json_safe

    audio = _audio_options(args)
    settings = _finetune_settings(args)
    settings["options"] |= audio
    if args.dropout is not None:
        if not 0.0 <= args.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {args.dropout}")
        settings["dropout"] = args.dropout
    cfg = FinetuneConfig(args.task, args.data, args.init, args.out, seed=args.seed, **settings)
    if args.task == "audio-classify":
        from selfsup import distributed
        from selfsup.finetune_audio import finetune_audio

        distributed.setup(cfg.device)  # under torchrun: held over the print, rank 0's alone
        try:
            res = finetune_audio(cfg, progress=_tty())
            if distributed.is_main():
                print(json.dumps(json_safe({"task": args.task, "dev": res["dev"],
                                            "test": res["test"]})))  # fmt: skip
        finally:
            distributed.teardown()
        return res
    res = finetune(cfg, progress=_tty())
    print(json.dumps(json_safe({"task": args.task, **res["dev"]})))
    return res


def cmd_evaluate(args) -> None:
    from selfsup.finetuning import evaluate_finetuned, json_safe

    audio = _audio_options(args)
    if args.task == "audio-classify":
        from selfsup.finetune_audio import evaluate_audio

        metrics = evaluate_audio(args.model, args.data, args.split, _task_options(args) | audio,
                                 device=args.device, precision=args.precision)  # fmt: skip
        print(json.dumps(json_safe({"task": args.task, "split": args.split, **metrics})))
        return
    metrics = evaluate_finetuned(
        args.model,
        args.task,
        args.data,
        args.split,
        _task_options(args),
        device=args.device,
        precision=args.precision,
        beams=args.beams,
    )
    print(json.dumps(json_safe({"task": args.task, "split": args.split, **metrics})))


def _suite_settings(args) -> dict:
    """FinetuneConfig fields from the glue/clue flags."""
    return dict(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, max_len=args.max_len,
        train_limit=args.train_limit, preset=args.preset, tokenizer=args.tokenizer,
        device=args.device, precision=args.precision,
    )  # fmt: skip


def cmd_glue(args) -> None:
    from selfsup.benchmark import run_glue

    run_glue(args.init, args.data, args.out, args.tasks, args.seeds, **_suite_settings(args))


def cmd_clue(args) -> None:
    from selfsup.benchmark import run_clue

    run_clue(
        args.init, args.data, args.out, args.tasks, args.seeds, fold=args.fold,
        train_size=args.ocnli_train, **_suite_settings(args),
    )  # fmt: skip


def cmd_compare(args) -> None:
    from selfsup.benchmark import run_compare

    run_compare(args.init, args.task, args.data, args.out, args.seeds, **_finetune_settings(args))


def cmd_superb(args) -> None:
    from selfsup.eval.superb import LRS, format_table, run_superb

    if not args.tasks:
        raise ConfigError("give --task: ks, sid, sid-fsdd, pr, all or classify")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    import torch

    from selfsup import distributed

    torch.set_num_threads(args.threads)
    distributed.setup()  # under torchrun: one group for every upstream; rank 0 alone prints
    try:
        main = distributed.is_main()
        show = (lambda m: print(m, flush=True)) if main else distributed.quiet
        reports = {}
        for i, spec in enumerate(args.upstream):
            out = None
            if args.out:
                out = Path(args.out) / (spec.replace(":", "-").replace("/", "_") if
                                        len(args.upstream) > 1 else "")  # fmt: skip
            show(f"upstream {i + 1}/{len(args.upstream)}: {spec}")
            reports[spec] = run_superb(
                spec, args.tasks, args.data_root, out, seeds=args.seeds, lrs=args.lrs or LRS,
                epochs=args.epochs, cache_dir=args.cache_dir, data=args.data,
                pattern=args.pattern, label_column=args.label_column, log=show,
            )  # fmt: skip
        show(json.dumps(reports) if args.json else format_table(reports))
    finally:
        distributed.teardown()


def _add_cluster_parser(sub) -> None:
    p = sub.add_parser(
        "cluster",
        help="k-means labels of audio frames (MFCCs or a run's layer): HuBERT's targets",
        description="Cluster the frames of every audio file of --data with k-means and write a "
        "labels folder\n(labels.tsv, labels.json, centroids.npy) for `selfsup pretrain "
        "--objective hubert --labels`.",
        epilog="examples:\n"
        "  selfsup cluster mfcc --data clips/ --k 100 --out labels1      # HuBERT iteration 1\n"
        "  selfsup pretrain --objective hubert --labels labels1 --data clips/ --out run1\n"
        "  selfsup cluster run1 --layer 6 --data clips/ --k 500 --out labels2  # iteration 2",
    )
    p.add_argument(
        "source",
        help="mfcc (13 MFCCs + deltas + delta-deltas at 100 Hz) | fbank (80 log-mel) | RUN | "
        "HF_FOLDER (wav2vec2, hubert) | random:RUN: whose frames to cluster",
    )
    p.add_argument(
        "--data",
        nargs="+",
        action="extend",
        required=True,
        metavar="PATH",
        help="folders of audio files or CSV/TSV manifests; repeat to add more",
    )
    p.add_argument("--k", type=int, required=True, help="clusters (HuBERT: 100, then 500)")
    p.add_argument("--out", required=True, help="new labels folder")
    p.add_argument(
        "--layer",
        type=int,
        default=None,
        help="RUN: the layer to cluster (0: the Transformer's input; -1: the last)",
    )
    p.add_argument(
        "--sample",
        type=int,
        default=100_000,
        help="frames k-means++ starts from; up to this many in all: Lloyd's k-means on every frame",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and k-means++")
    p.add_argument("--cache-dir", default=None, help="feature cache (~/.cache/selfsup)")
    p.add_argument("--device", default="auto", help=f"RUN's encoder: {DEVICE_HELP}")


def cmd_cluster(args) -> None:
    from selfsup.cluster_audio import cluster_audio

    cluster_audio(args.source, args.data, args.k, args.out, args.layer, args.sample, args.seed,
                  args.cache_dir, args.device)  # fmt: skip


def _add_units_parser(sub) -> None:
    p = sub.add_parser(
        "units",
        help="write speech as lines of discrete units (a vq-wav2vec run), for a BERT on them",
        description="Quantize every audio file of --data with a vq-wav2vec run: one line of "
        "units per file\n(a unit is a frame's codes, g0_g1), and a companion .json (the run, "
        "the files in line order,\nthe frame rate, the vocabulary size). `selfsup pretrain "
        "--objective mlm --tokenizer units`\nthen trains a BERT on the lines.",
        epilog="examples:\n"
        "  selfsup pretrain --objective vq-wav2vec --data clips/ --out runs/vq\n"
        "  selfsup units runs/vq --data clips/ --out units.txt\n"
        "  selfsup pretrain --objective mlm --data units.txt --tokenizer units --out runs/bert",
    )
    p.add_argument("run", help="a vq-wav2vec run (an encoder with a quantizer)")
    p.add_argument("--data", nargs="+", action="extend", required=True, metavar="PATH",
                   help="folders of audio files or CSV/TSV manifests")  # fmt: skip
    p.add_argument("--out", required=True, help="the units file (its .json companion beside it)")
    p.add_argument("--dedup", action="store_true", help="merge runs of the same unit into one")
    p.add_argument("--cache-dir", default=None, help="feature cache (~/.cache/selfsup)")


def cmd_units(args) -> None:
    from selfsup.units import write_units

    write_units(args.run, args.data, args.out, args.dedup, args.cache_dir)


def _add_probe_parser(sub) -> None:
    p = sub.add_parser(
        "probe",
        help="kNN and linear probes of an image run's frozen backbone on a labelled split",
        description="Extract the frozen backbone's features (eval mode, no gradient) of the "
        "train and test images\nand score them by kNN (k = 200, cosine, temperature 0.1) and "
        "by a linear probe (its learning\nrate swept on a held-out part of the training "
        "images), over several probe seeds.",
        epilog="examples:\n"
        "  selfsup probe runs/simclr --data ../shared/data/cifar10/cifar10-jpeg-subset.zip\n"
        "  selfsup probe pixels --data cifar.zip --method knn\n"
        "  selfsup probe random:runs/simclr --data cifar.zip --tsne random.png --out r.json",
    )
    p.add_argument("source", help="RUN | random:RUN (its untrained initialisation) | pixels")
    p.add_argument("--data", required=True, help="a folder or zip with train/ and test/ class "
                   "folders (or only train: then --test)")  # fmt: skip
    p.add_argument("--test", default=None, help="labelled test images, when --data has no split")
    p.add_argument("--method", nargs="+", choices=["knn", "linear"], default=["knn", "linear"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="linear-probe seeds")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256, help="feature extraction batch")
    p.add_argument("--k", type=int, default=200, help="kNN neighbours")
    p.add_argument("--temperature", type=float, default=0.1, help="kNN vote temperature")
    p.add_argument("--tsne", default=None, metavar="PNG", help="a t-SNE plot of test features")
    p.add_argument("--out", default=None, metavar="JSON", help="write the report here too")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache (~/.cache/selfsup)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")


def _add_align_parser(sub) -> None:
    p = sub.add_parser(
        "align",
        help="language means of a multilingual model, their difference, cross-lingual retrieval "
        "and fill-mask with the difference added",
        description="Mean token vector per language at --layer (Liu et al., arXiv:2010.10041) "
        "and three measurements:\n(1) cross-lingual retrieval of parallel texts, before and "
        "after subtracting each language's mean;\n(2) fill-mask with the difference vector "
        "added at --layer (the share of answers in the target script);\n(3) with --qa, a QA "
        "model's F1 on the other languages with their vectors shifted toward the first.",
        epilog="examples:\n"
        "  selfsup align runs/multi --data ../shared/data/xquad --langs en zh --out align-en-zh\n"
        "  selfsup align runs/multi --data pairs.tsv --langs en de fr --layer 2 --measure "
        "retrieval\n"
        "  selfsup align runs/multi --data xquad/ --langs en zh --qa ft/qa-en --json",
    )
    p.add_argument(
        "model",
        help="a selfsup run (fill-mask needs its MLM head); a HF BERT or "
        "fine-tuned folder with --measure retrieval",
    )
    p.add_argument(
        "--data",
        nargs="+",
        action="extend",
        required=True,
        metavar="PARALLEL",
        help="a folder of SQuAD files NAME.LANG.json with parallel paragraphs "
        "(XQuAD), such files, or a TSV/CSV whose header names the languages",
    )
    p.add_argument(
        "--langs",
        nargs="+",
        required=True,
        metavar="LANG",
        help="two or more languages of the data; fill-mask and qa pair the first with each other",
    )
    p.add_argument(
        "--layer",
        type=int,
        default=-1,
        help="where the shift is added and the "
        "means taken: the output of block L (0: the embeddings; -1: the last)",
    )
    p.add_argument(
        "--measure",
        nargs="+",
        default=None,
        choices=["retrieval", "fill-mask", "qa"],
        help="default: retrieval fill-mask (and qa with --qa)",
    )
    p.add_argument(
        "--qa",
        default=None,
        metavar="FOLDER",
        help="a `selfsup finetune --task qa` folder fine-tuned on the first language",
    )
    p.add_argument(
        "--qa-data",
        nargs="+",
        default=None,
        metavar="PATH",
        help="the questions: SQuAD files NAME.LANG.json or their folder (--data)",
    )
    p.add_argument(
        "--scale", type=float, default=1.0, help="the shift is this times the difference vector"
    )
    p.add_argument("--top-k", type=int, default=5, help="fill-mask answers per position")
    p.add_argument("--mask-prob", type=float, default=0.15, help="share of tokens masked")
    p.add_argument("--fill-texts", type=int, default=100, help="texts per language filled")
    p.add_argument("--max-len", type=int, default=256, help="tokens per text (longer: cut)")
    p.add_argument(
        "--plot",
        default="pca",
        choices=["pca", "tsne", "none"],
        help="clusters.png of the texts' vectors by language (with --out)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the masks and the t-SNE")
    p.add_argument(
        "--out", default=None, help="new folder: align.json, means.safetensors, clusters.png"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def cmd_align(args) -> None:
    from selfsup.align import align, format_report

    measures = tuple(args.measure or ("retrieval", "fill-mask"))
    report = align(
        args.model,
        args.data,
        args.langs,
        args.layer,
        args.out,
        measures,
        max_len=args.max_len,
        top_k=args.top_k,
        scale=args.scale,
        mask_prob=args.mask_prob,
        fill_texts=args.fill_texts,
        seed=args.seed,
        qa=args.qa,
        qa_data=args.qa_data,
        plot=args.plot,
        log=_to_stderr,
    )
    print(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_probe(args) -> None:
    from selfsup.probe_images import run_probe

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run_probe(args.source, args.data, tuple(args.method), tuple(args.seeds), args.test,
                       image_size=args.image_size, batch_size=args.batch_size, knn_k=args.k,
                       knn_temperature=args.temperature, tsne=args.tsne, out=args.out,
                       cache_dir=args.cache_dir, log=_to_stderr)  # fmt: skip
    print(json.dumps(report))


def _add_contextual_parser(sub) -> None:
    p = sub.add_parser(
        "contextual",
        help="one word's contextual vectors across sentences: a similarity heatmap, neighbours",
        description="Find every whole-word occurrence of --word in the sentences of --input, "
        "take its vector\n(the mean of its sub-tokens' hidden states at --layer) and write the "
        "cosine-similarity heatmap,\nthe vectors and each occurrence's nearest neighbours into "
        "--out. Lines `label<TAB>sentence`\nlabel the sentences: the summary then compares "
        "similarity within and across labels.",
        epilog="examples:\n"
        "  selfsup contextual runs/latest --word bank --input examples/contextual-sentences.tsv\n"
        "  selfsup contextual bert-zh/ --word 苹果 --input sentences.tsv --layer 0 --out apple",
    )
    p.add_argument("model", help="a selfsup run, a `selfsup finetune` folder or a HF BERT folder")
    p.add_argument("--word", required=True, help="the word (or words, in a row) to follow")
    p.add_argument("--input", required=True, help="one sentence a line, or label<TAB>sentence")
    p.add_argument("--out", default=None, help="new output folder (default contextual-WORD)")
    p.add_argument("--layer", type=int, default=-1,
                   help="0: the embeddings, 1..L the layers, -1 the last")  # fmt: skip
    p.add_argument("--top-k", type=int, default=3, help="nearest neighbours listed per occurrence")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per forward")


def cmd_contextual(args) -> None:
    from selfsup.contextual import contextual

    contextual(args.model, args.word, args.input, args.out, args.layer, args.top_k,
               args.batch_size)  # fmt: skip


def _add_embryology_parser(sub) -> None:
    p = sub.add_parser(
        "embryology",
        help="probe every saved checkpoint of a run (POS probe, MLM by part of speech, NSP/SOP, "
        "held-out loss) and plot each against the step",
        description="For every saved set of weights of RUN (snapshots of --save-schedule log, "
        "checkpoints, final\nweights): a frozen linear UPOS probe (a word = its first "
        "sub-token), whole-word MLM accuracy\nper UPOS tag on UD dev, and the run's held-out "
        "loss and NSP/SOP accuracy. Writes\nembryology.json and embryology.png (log step axis) "
        "into --out (arXiv:2010.02480).",
        epilog="example:\n"
        "  selfsup pretrain --preset mini --steps 3000 --save-schedule log --out runs/embryo\n"
        "  selfsup embryology runs/embryo --probe pos --data ../shared/data/ud-english-ewt",
    )
    p.add_argument("run", help="a selfsup text pretraining run")
    p.add_argument("--probe", default="pos", choices=["pos"], help="what to probe")
    p.add_argument("--data", required=True, help="a UD folder (*-ud-train.conllu, "
                   "*-ud-dev.conllu)")  # fmt: skip
    p.add_argument("--out", default=None, help="output folder (default RUN/embryology)")
    p.add_argument("--layer", type=int, default=-1, help="the probe's layer (0: embeddings, "
                   "-1: the last)")  # fmt: skip
    p.add_argument("--train-words", type=int, default=20_000, help="probe training words "
                   "(a seeded sample of train sentences)")  # fmt: skip
    p.add_argument("--dev-words", type=int, default=5_000, help="probe and MLM words "
                   "(a seeded sample of dev sentences)")  # fmt: skip
    p.add_argument("--mask-prob", type=float, default=0.15, help="share of dev words masked")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples, masks and probe")
    p.add_argument("--no-heldout", action="store_true", help="skip the run's held-out metrics "
                   "(which rebuild its held-out data from its corpus)")  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")


def cmd_embryology(args) -> None:
    from selfsup.embryology import embryology

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    embryology(args.run, args.data, args.out, args.probe, args.layer, args.train_words,
               args.dev_words, args.mask_prob, args.seed, not args.no_heldout)  # fmt: skip


def _add_dna_splice_parser(sub) -> None:
    p = sub.add_parser(
        "dna-splice",
        help="write the splice-junction task (UCI) as train/dev/test TSV files for finetune",
        description="Write train.tsv, dev.tsv and test.tsv (columns label, name, row, text) of "
        "the committed\nsplit of the UCI splice data (selfsup/eval/splits/splice.json: "
        "deduplicated, ambiguity\ncodes and the rows inside the chrX pretraining region "
        "dropped, stratified 80/10/10).",
        epilog="examples:\n"
        "  selfsup dna-splice --data ../shared/data/dna/splice --out splice/\n"
        "  selfsup finetune --task classify --data splice/ --init runs/dna --out ft/splice\n"
        "  selfsup dna-splice --data ../shared/data/dna/splice --words a,t,c,g --out splice-atcg/",
    )
    p.add_argument("--data", required=True, help="the folder holding splice.tsv")
    p.add_argument("--out", required=True, help="new folder for the three files")
    p.add_argument("--words", default=None, help="four words for A,T,C,G (e.g. a,t,c,g): each "
                   "base becomes a word, for a text model's vocabulary")  # fmt: skip
    p.add_argument("--reverse-complement", action="store_true",
                   help="add every training row's reverse complement (labels kept)")  # fmt: skip


def cmd_dna_splice(args) -> None:
    from selfsup.eval.splice import parse_words, write_task

    written = write_task(args.data, args.out, parse_words(args.words), args.reverse_complement)
    print(json.dumps({"out": args.out, **written}))


def _tty() -> bool:
    return sys.stderr.isatty()


# import name -> pip name of the optional packages whose absence main() reports
PIP_NAMES = {"sklearn": "scikit-learn", "PIL": "Pillow", "onnxruntime": "onnxruntime"}

COMMANDS = {
    "finetune": cmd_finetune,
    "evaluate": cmd_evaluate,
    "glue": cmd_glue,
    "clue": cmd_clue,
    "compare": cmd_compare,
    "pretrain": cmd_pretrain,
    "tokenizer": cmd_tokenizer,
    "fill-mask": cmd_fill_mask,
    "export": cmd_export,
    "embed": cmd_embed,
    "predict": cmd_predict,
    "generate": cmd_generate,
    "inspect-masking": cmd_inspect_masking,
    "superb": cmd_superb,
    "cluster": cmd_cluster,
    "units": cmd_units,
    "probe": cmd_probe,
    "align": cmd_align,
    "contextual": cmd_contextual,
    "embryology": cmd_embryology,
    "dna-splice": cmd_dna_splice,
}


def main(argv: list[str] | None = None) -> None:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # bare `selfsup`: what there is to run
            parser.print_help()
            return
        COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"selfsup: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("selfsup: interrupted", file=sys.stderr)
        sys.exit(130)
    except MemoryError:
        print("selfsup: error: out of memory", file=sys.stderr)
        sys.exit(1)
    except ModuleNotFoundError as e:  # an optional package (an extra of pyproject.toml)
        if e.name is None or e.name.split(".")[0] == "selfsup":
            raise  # a bug, not a missing extra
        top = e.name.split(".")[0]
        package = PIP_NAMES.get(top, top)
        print(f"selfsup: error: this needs the optional package {package}, which is not "
              f"installed (pip install {package})", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    except FloatingPointError as e:  # training diverged
        print(f"selfsup: error: {e} (try a lower --lr)", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:
        os._exit(0)
    except OSError as e:  # disk full, permissions, ...: the message says it all
        print(f"selfsup: error: {e}", file=sys.stderr)
        sys.exit(1)
