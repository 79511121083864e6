"""selfsup: self-supervised pretraining the BERT way.

    import selfsup
    selfsup.pretrain(steps=200, out="runs/demo")       # the commands, as functions
    model = selfsup.load("runs/demo")                  # any model folder
    model.fill_mask("the [MASK] sat on the mat .")

See selfsup/api.py. The names below are imported on first use, so `import selfsup` stays light.
"""

from selfsup.errors import ConfigError
from selfsup.keys import IGNORE

__version__ = "0.1.0"

_API = ("Model", "finetune", "load", "pretrain")


def __getattr__(name: str):
    if name in _API:
        from selfsup import api

        return getattr(api, name)
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")


__all__ = ["IGNORE", "ConfigError", "__version__", *_API]
