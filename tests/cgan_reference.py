"""A hand-written unsplit cGAN step (METHOD.md's iteration on one G and one D), the reference the split step and
the centralized baseline are checked against."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def cgan_step(G: nn.Module, D: nn.Module, x: Tensor, y: Tensor, z: Tensor, lr_g: float, lr_d: float,
              betas: tuple[float, float]) -> None:
    """One D step on fakes (target 0) and reals (target 1), then one G step through D (target 1), mean BCE."""
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas)
    fake = G(z, y)
    d_fake, d_real = D(fake.detach(), y), D(x, y)
    loss_d = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    out = D(fake, y)
    loss_g = F.binary_cross_entropy(out, torch.ones_like(out))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def assert_same_state(trained: dict[str, Tensor], reference: nn.Module, name: str) -> None:
    """Every parameter and batch-norm statistic of ``reference`` equals ``trained``'s (float tolerance)."""
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(trained[key], value, msg=lambda m, key=key: f"{name} {key}: {m}")
