"""`selfsup pretrain --init FOLDER`: a new run that starts from a model folder's weights instead
of random ones (continued pretraining: a published wav2vec 2.0 on a user's own audio).

The folder decides the run's shape, so it acts twice:

- `init_config(cfg, path)`, when the run's config is built (before `--set` overrides, which
  still apply after it): the model section, the objective settings and the data's feature
  settings the folder fixes, and `train.init` = the folder, recorded in the run's config.json;
- `init_weights(objective, cfg, log)`, once the recipe built the objective and before the
  first step of a new run (a resumed run reads its checkpoint instead): the folder's weights.
  The objective's weights the folder lacks keep the run's seeded initialisation; the objective
  says which, in a warning the log shows.

An objective takes --init through a class method `init_from(path) -> FolderInit`
(objectives/base.py); the others refuse it with a one-line error. Today: wav2vec2, from
HuggingFace wav2vec 2.0 folders (selfsup.interop.hf_wav2vec2.pretraining_init).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from selfsup.errors import ConfigError
from selfsup.objectives.base import FolderInit


def folder_init(name: str, path: str | Path) -> FolderInit:
    """Objective `name`'s reading of the folder; a ConfigError when it takes no --init."""
    from selfsup.objectives import OBJECTIVES, get_objective

    read = getattr(get_objective(name), "init_from", None)
    if read is None:
        takes = sorted(n for n, c in OBJECTIVES.items() if hasattr(c, "init_from"))
        raise ConfigError(f"--init is not supported by objective {name} (it is by "
                          f"{', '.join(takes)}); its runs start from random weights")  # fmt: skip
    return read(Path(path))


def init_config(cfg, path: str | Path) -> None:
    """Set the model, the objective's settings and data.features of RunConfig `cfg` from the
    folder, and train.init to it (the preset's training settings stay)."""
    init = folder_init(cfg.objective.name, path)
    cfg.model = init.model
    for key, value in init.objective.items():
        setattr(cfg.objective, key, value)
    features = getattr(cfg.data, "features", None)
    if init.features and features is not None:
        cfg.data.features = replace(features, **init.features)
    cfg.train.init = str(path)


def init_weights(objective, cfg, log=print) -> None:
    """Load the folder of cfg.train.init into the built `objective`: every weight it gives must
    be one of the objective's, of the same shape (a one-line error otherwise, e.g. after a
    `--set` that changed the model's shape)."""
    path = cfg.train.init
    init = folder_init(cfg.objective.name, path)
    state, warning = init.weights()
    own = objective.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ConfigError(f"--init {path}: the objective {cfg.objective.name} has no weight "
                          f"{unknown[0]}")  # fmt: skip
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise ConfigError(
                f"--init {path}: weight {key} has shape {tuple(value.shape)}, the run's model "
                f"{tuple(own[key].shape)} (a --set changed the shape the folder implies)"
            )
    objective.load_state_dict(state, strict=False)
    kept = len([k for k, _ in objective.named_parameters() if k not in state])
    log(f"init: {len(state)} weights from {path} ({init.describe})"
        + (f"; {kept} of the objective's own kept as initialised" if kept else ""))  # fmt: skip
    if warning:
        log(f"warning: {warning}")
