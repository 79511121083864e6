"""Presets by name, one file per modality; each is a plain RunConfig."""

from __future__ import annotations

from selfsup.config import RunConfig
from selfsup.errors import ConfigError
from selfsup.presets import audio, dna, image, text

PRESETS = {
    "text": ({name: text.text_preset for name in text.MODELS}),
    "audio": ({name: audio.audio_preset for name in audio.MODELS}),
    "image": ({name: image.image_preset for name in image.MODELS}),
    "dna": ({name: dna.dna_preset for name in dna.MODELS}),
}


def preset(name: str, modality: str = "text") -> RunConfig:
    if modality not in PRESETS:
        raise ConfigError(f"no presets for modality {modality!r}; choose from {', '.join(PRESETS)}")
    named = PRESETS[modality]
    if name not in named:
        raise ConfigError(f"unknown preset {name!r} for {modality}; choose from {', '.join(named)}")
    return named[name](name)
