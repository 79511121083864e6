"""selfsup: self-supervised pretraining the BERT way."""

from selfsup.keys import IGNORE

__version__ = "0.1.0"

__all__ = ["IGNORE", "__version__"]
