"""LARS: layer-wise adaptive rate scaling (You, Gitman and Ginsburg, arXiv:1708.03888), the
optimizer of SimCLR (arXiv:2002.05709), BYOL (arXiv:2006.07733) and Barlow Twins
(arXiv:2103.03230) at large batches. Each parameter tensor w (a "layer") with gradient g moves
at its own rate, so that its step is a fixed fraction of its norm:

    u = g + weight_decay * w
    trust = eta * ||w|| / ||u||          (1 where ||w|| or ||u|| is 0)
    v <- momentum * v + lr * trust * u
    w <- w - v

This is the update of SimCLR's LARS (its "classic momentum" form: the learning rate inside the
velocity, as the paper's algorithm 1); BYOL's (optax) and Barlow Twins' take the same norm of the
decayed update. The paper's own rate divides by ||g|| + weight_decay * ||w|| instead of ||u||:
the same for weight decays near SimCLR's 1e-6.

Groups with `lars_exclude=True` (biases and norm parameters, as all three methods exclude them)
get neither weight decay nor adaptation: v <- momentum * v + lr * g, plain momentum SGD.
`trust_clip` caps the step at the group's rate, lr * trust -> min(lr, trust) (NVIDIA apex's
LARC "clip" mode, timm's trust_clip). Defaults: SimCLR's (momentum 0.9, weight decay 1e-6,
eta 0.001).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class LARS(torch.optim.Optimizer):
    """LARS as the module docstring. Per-group options: lr, momentum, weight_decay, eta,
    trust_clip, lars_exclude. The velocity of each parameter is its state's
    "momentum_buffer", so the state dict resumes a run exactly."""

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        eta: float = 0.001,
        trust_clip: bool = False,
    ):
        if lr < 0:
            raise ValueError(f"LARS lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"LARS weight_decay must be >= 0, got {weight_decay}")
        if eta <= 0:
            raise ValueError(f"LARS eta must be positive, got {eta}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                        trust_clip=trust_clip, lars_exclude=False)  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                u = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"]:
                        u = u.add(p, alpha=group["weight_decay"])
                    u = u * self._trust(p, u, group)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                v = state["momentum_buffer"]
                v.mul_(momentum).add_(u, alpha=lr)
                p.sub_(v)
        return loss

    @staticmethod
    def _trust(p: torch.Tensor, u: torch.Tensor, group: dict) -> torch.Tensor:
        """eta * ||w|| / ||u||, 1 where either norm is 0; clipped to lr's scale on request.
        A 0-dim tensor (no host sync on a GPU)."""
        w_norm, u_norm = p.norm(), u.norm()
        one = torch.ones_like(w_norm)
        ratio = group["eta"] * w_norm / u_norm.clamp(min=torch.finfo(u_norm.dtype).tiny)
        trust = torch.where((w_norm > 0) & (u_norm > 0), ratio, one)
        if group["trust_clip"] and group["lr"] > 0:
            trust = (trust / group["lr"]).clamp(max=1.0)
        return trust
