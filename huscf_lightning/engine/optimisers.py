"""The run's two optimisers: one Adam over every G copy and one over every D copy, and their rebuilding when a
round's participants change.

Adam is elementwise, so one step over a stacked tensor is one step of every client's copy in it. A
federated client builds its optimiser when it is selected: the rebuilt optimisers carry the state of the
parameters that stay (the server blocks'); the new participants' stacks are new tensors and start afresh.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.strategies import Strategy
from torch import nn

from huscf_lightning.split.chunked_adam import ChunkedAdam


def build_optimizers(
    G: nn.Module, D: nn.Module, lr_g: float, lr_d: float, betas: Sequence[float], device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """(G's Adam, D's Adam) for networks on ``device``."""
    betas = tuple(betas)
    if device.type == "cpu":  # PyTorch's CPU step, in chunks: no fresh stack-sized temporaries each step
        return ChunkedAdam(G.parameters(), lr=lr_g, betas=betas), ChunkedAdam(D.parameters(), lr=lr_d, betas=betas)
    fused = device.type == "cuda" or None  # one fused kernel per step on a GPU; PyTorch's default elsewhere
    return (
        torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas, fused=fused),
        torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas, fused=fused),
    )


def replace(strategy: Strategy, fresh: Sequence[torch.optim.Optimizer]) -> None:
    """Make ``fresh`` the Trainer strategy's optimisers, each given the state its predecessor had for every
    parameter they share."""
    fresh = list(fresh)
    for before, after in zip(strategy.optimizers, fresh):
        for group in after.param_groups:
            for param in group["params"]:
                if param in before.state:
                    after.state[param] = before.state[param]
    strategy.optimizers = fresh
