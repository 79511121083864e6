"""Presets by name, one file per modality (text today); each is a plain RunConfig."""

from __future__ import annotations

from selfsup.config import RunConfig
from selfsup.errors import ConfigError
from selfsup.presets import text

PRESETS = {name: text.text_preset for name in text.MODELS}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name](name)
