"""Which device a run uses, and whether it can compute in bf16."""

from __future__ import annotations

import os

import torch

from selfsup.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the GPU when there is one, else the CPU; `cpu`, `cuda`, `cuda:1` as named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA GPU is available")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu or cuda")
    return device


PRECISIONS = ("auto", "bf16", "fp32")


def bf16_reason(device: torch.device) -> str | None:
    """Why `device` computes in bf16 natively ("the CPU has avx512_bf16"), or None when it
    would only emulate it (bf16 matmuls then run many times slower than fp32). Read from the
    CPU's flags or the GPU's capability, never timed: a timing probe is not reproducible on a
    shared machine."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return f"the GPU {torch.cuda.get_device_name(device)} has bf16"
        return None
    cpu = torch.cpu
    for flag, check in (("AMX", "_is_amx_tile_supported"),
                        ("avx512_bf16", "_is_avx512_bf16_supported")):  # fmt: skip
        if getattr(cpu, check, lambda: False)():
            return f"the CPU has {flag}"
    return None


def bf16_supported(device: torch.device) -> bool:
    return bf16_reason(device) is not None


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """("bf16" | "fp32", why) for the `precision` setting on `device`. `auto` is bf16 where the
    hardware has it natively and fp32 elsewhere; $SELFSUP_PRECISION (bf16 | fp32), when set,
    decides `auto` instead (the tests pin fp32 with it). bf16 without the hardware is an
    error."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    reason, what = bf16_reason(device), "GPU" if device.type == "cuda" else "CPU"
    why = "as asked"
    if precision == "auto":
        env = os.environ.get("SELFSUP_PRECISION", "")
        if env:
            if env not in ("bf16", "fp32"):
                raise ConfigError(f"SELFSUP_PRECISION={env!r}; use bf16 or fp32")
            precision, why = env, f"auto: SELFSUP_PRECISION={env}"
        elif reason is not None:
            precision, why = "bf16", f"auto: {reason}"
        else:
            precision, why = "fp32", f"auto: the {what} has no native bf16"
    if precision == "bf16" and reason is None:
        raise ConfigError(
            f"bf16 was requested but this {what} has no native bf16 (it would run "
            "~20x slower); use --precision fp32 or auto"
        )
    return precision, why


def inference_bf16(precision: str, device: torch.device) -> bool:
    """Whether a forward-only command (predict, embed, evaluate) runs in bf16: `precision` is
    fp32 (their default), bf16, or auto (as for pretraining)."""
    return resolve_precision(precision, device)[0] == "bf16"
