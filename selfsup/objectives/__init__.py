"""Pretraining objectives: one file per method, collected in a plain dict."""

from selfsup.objectives.mlm import MLM, MLMWithNSP, MLMWithSOP

OBJECTIVES = {"mlm": MLM, "mlm+nsp": MLMWithNSP, "mlm+sop": MLMWithSOP}

__all__ = ["OBJECTIVES", "MLM", "MLMWithNSP", "MLMWithSOP"]
