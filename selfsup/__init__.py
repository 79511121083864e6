"""selfsup: self-supervised pretraining the BERT way."""

__version__ = "0.1.0"

IGNORE = -100  # label value that losses skip; defined once, used everywhere
