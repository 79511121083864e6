"""DNA presets: the BERT shapes of the text presets (tiny, mini) over sequence windows, written
in Python. The default tokenizer is DNABERT's overlapping 6-mers (data.tokenizer dna-kmer6),
masked leak-free (objective.scheme leakfree); windows fill max_len = 128 tokens (133 bp; the
CPU-sized cut of DNABERT's 512), or a random length from 5 bp for half of them.

`tiny` trains in a few minutes on 2 CPU cores; `mini` is the 30-minute recipe of the README's
DNA section (its steps are a round budget: experiments/dna_transfer.py sets the steps that fill
30 minutes on the machine it runs on).
"""

from __future__ import annotations

from copy import deepcopy

from selfsup.config import RunConfig, TrainConfig
from selfsup.data.dna import DNADataConfig
from selfsup.objectives.dna_mlm import DNAMLMConfig
from selfsup.presets.text import MODELS as TEXT_MODELS

MODELS = {name: TEXT_MODELS[name] for name in ("tiny", "mini")}

TRAIN: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        steps=300, batch_size=32, lr=2e-3, warmup_steps=30, save_every=100, eval_every=100
    ),  # fmt: skip
    "mini": TrainConfig(
        steps=1500, batch_size=64, lr=1e-3, warmup_steps=150, save_every=250, eval_every=250
    ),  # fmt: skip
}


def dna_preset(name: str) -> RunConfig:
    return RunConfig(preset=name, model=deepcopy(MODELS[name]), objective=DNAMLMConfig(),
                     data=DNADataConfig(), train=deepcopy(TRAIN[name]))  # fmt: skip
