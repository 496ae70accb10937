"""The GAN losses of one lock-step iteration: every client's mean BCE, summed over clients in one call.

What a client's loss is divided by is its method's placement's (`Placement.loss_denominators`): its own
batch size for the federated methods, the whole round's for centralized training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from huscf_lightning.split.placement import Placement


class SampleWeights:
    """1 / (the client's loss denominator) for each sample of a step, made once per batch-size pattern and
    device (no host-to-device copy, so no wait for the GPU, on the step path)."""

    def __init__(self, placement: Placement) -> None:
        self.placement = placement
        self._made: dict[tuple, Tensor] = {}

    def __call__(self, sizes: list[int], total: int, device: torch.device) -> Tensor:
        """``sizes``: this process's clients' batch sizes; ``total``: the round's samples over every process."""
        key = (tuple(sizes), total, device)
        if key not in self._made:
            counts = torch.tensor(sizes)
            per_sample = self.placement.loss_denominators(counts, total)
            self._made[key] = torch.repeat_interleave(1.0 / per_sample, counts).to(device)
        return self._made[key]


def client_bce(outputs: Sequence[Tensor], target: float, weights: Tensor) -> Tensor:
    """Sum over clients of each client's mean BCE, computed in one call over the concatenated outputs."""
    probs = torch.cat(list(outputs)).reshape(-1)
    per_sample = F.binary_cross_entropy(probs, torch.full_like(probs, target), reduction="none")
    return (per_sample * weights).sum()


def nothing(dangling: list[Tensor]) -> Tensor | float:
    """Zero, depending on a sharded server's empty-batch outputs (so the backward runs their collectives too)."""
    return sum(t.sum() for t in dangling) * 0.0 if dangling else 0.0
