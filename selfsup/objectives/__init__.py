"""Pretraining objectives: one file per method, collected in a plain dict.

Every entry is a class with a `Config` dataclass (its section of the run config, `name` first)
and `build(cfg, model_cfg)`, following the contract of objectives/base.py. An objective from
your own module joins with `register("name", MyObjective)`, or without importing selfsup first,
through an entry point in your package's metadata:

    [project.entry-points."selfsup.objectives"]
    my-objective = "my_package.module:MyObjective"
"""

from __future__ import annotations

from importlib.metadata import entry_points

from selfsup.errors import ConfigError
from selfsup.objectives.apc import APC
from selfsup.objectives.barlow import BarlowTwins
from selfsup.objectives.bart import BART
from selfsup.objectives.base import Objective
from selfsup.objectives.byol import BYOL
from selfsup.objectives.cpc import CPC
from selfsup.objectives.delores import AudioBarlowTwins, AudioVICReg
from selfsup.objectives.dna_mlm import DNAMLM
from selfsup.objectives.hubert import HuBERT
from selfsup.objectives.mass import MASS
from selfsup.objectives.mlm import MLM, MLMConfig, MLMWithNSP, MLMWithSOP
from selfsup.objectives.mockingjay import Mockingjay
from selfsup.objectives.pixels import Pixels
from selfsup.objectives.relpatch import RelPatch
from selfsup.objectives.rotation import Rotation
from selfsup.objectives.simclr import SimCLR
from selfsup.objectives.simsiam import SimSiam
from selfsup.objectives.t5 import T5
from selfsup.objectives.tera import TERA
from selfsup.objectives.vicreg import VICReg
from selfsup.objectives.vq_wav2vec import VQWav2Vec
from selfsup.objectives.wav2vec import Wav2Vec
from selfsup.objectives.wav2vec2 import Wav2Vec2

OBJECTIVES: dict[str, type[Objective]] = {
    "mlm": MLM, "mlm+nsp": MLMWithNSP, "mlm+sop": MLMWithSOP, "bart": BART, "mass": MASS,
    "t5": T5, "mockingjay": Mockingjay, "tera": TERA, "apc": APC,
    "hubert": HuBERT,
    "wav2vec2": Wav2Vec2,
    "cpc": CPC, "wav2vec": Wav2Vec, "vq-wav2vec": VQWav2Vec,
    # images
    "rotation": Rotation, "relpatch": RelPatch, "pixels": Pixels, "simclr": SimCLR,
    "byol": BYOL, "simsiam": SimSiam, "barlow": BarlowTwins, "vicreg": VICReg,
    # DeLoRes: the redundancy-reduction losses on speech (--modality audio --objective vicreg)
    "audio-vicreg": AudioVICReg, "audio-barlow": AudioBarlowTwins,
    # DNA / protein: BERT's MLM on sequence tokens (--modality dna --objective mlm)
    "dna-mlm": DNAMLM,
}  # fmt: skip

ENTRY_POINTS = "selfsup.objectives"
_loaded_entry_points = False


def register(name: str, objective: type[Objective]) -> None:
    """Make `objective` available by `name` (to `selfsup pretrain --objective`, run configs and
    checkpoint loading). It needs a `Config` dataclass whose first field is `name`, and a
    `build(cfg, model_cfg)` class method."""
    for attr in ("Config", "build"):
        if not hasattr(objective, attr):
            raise TypeError(f"objective {objective.__name__} has no {attr}")
    OBJECTIVES[name] = objective


def get_objective(name: str) -> type[Objective]:
    """The objective class registered as `name` (the package's own, `register`ed ones, then
    entry points); a one-line error naming the choices otherwise."""
    global _loaded_entry_points
    if name not in OBJECTIVES and not _loaded_entry_points:
        _loaded_entry_points = True
        for ep in entry_points(group=ENTRY_POINTS):
            OBJECTIVES.setdefault(ep.name, ep.load())
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def resolve_name(name: str, modality: str | None) -> str:
    """The registered name of objective `name` in `modality`: a method that exists in several
    modalities is registered once per other modality as MODALITY-NAME (`--modality audio
    --objective vicreg` is audio-vicreg); otherwise `name` itself."""
    if modality is not None and f"{modality}-{name}" in OBJECTIVES:
        return f"{modality}-{name}"
    return name


def build_objective(cfg, model_cfg) -> Objective:
    """The objective named by `cfg.name`, with its encoder and heads built from `model_cfg`."""
    return get_objective(cfg.name).build(cfg, model_cfg)


__all__ = [
    "OBJECTIVES", "MLM", "MLMConfig", "MLMWithNSP", "MLMWithSOP", "Objective", "build_objective",
    "get_objective", "register", "resolve_name",
]  # fmt: skip
