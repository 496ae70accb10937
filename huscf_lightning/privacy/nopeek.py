"""NoPeek (Vepakomma et al. 2020): a distance-correlation penalty between a client's inputs and the cut
activation it sends, so the activation carries less about the inputs than the task needs no more of.

Distance correlation (Székely et al. 2007) is written here because torchmetrics has none that backpropagates
through a batch; it is O(B^2) per client and batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor

from huscf_lightning.split.wire import UP, Wire


def _distances(x: Tensor) -> Tensor:
    """(B, B) Euclidean distances between the rows of ``x`` (B, d), with a gradient that is finite at 0."""
    squared = x.pow(2).sum(dim=1)
    gram = (squared.unsqueeze(0) + squared.unsqueeze(1) - 2 * x @ x.T).clamp_min(0)
    positive = gram > 0
    return torch.where(positive, gram, torch.ones_like(gram)).sqrt() * positive


def _centred(d: Tensor) -> Tensor:
    return d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()


def distance_correlation(x: Tensor, z: Tensor) -> Tensor:
    """The sample distance correlation of the rows of ``x`` (B, ...) and ``z`` (B, ...), in [0, 1]: 0 when the
    batch shows no dependence of any kind, 1 when one is a similarity transform of the other."""
    a = _centred(_distances(x.reshape(x.shape[0], -1)))
    b = _centred(_distances(z.reshape(z.shape[0], -1)))
    tiny = torch.finfo(a.dtype).tiny
    covariance = (a * b).mean().clamp_min(0)
    return (covariance / ((a * a).mean() * (b * b).mean()).sqrt().clamp_min(tiny)).sqrt()


class NoPeek:
    """Watches what the clients send over one cut during a forward and prices its dependence on their inputs."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    @contextmanager
    def watching(self, wire: Wire, cut: str) -> Iterator[dict[int, Tensor]]:
        """Inside, every client's activation sent up over ``cut`` is kept (with its graph), by client."""
        sent: dict[int, Tensor] = {}

        def keep(tensor: Tensor, clients: tuple[int, ...], sizes: tuple[int, ...], where: str, direction: str) -> None:
            if where == cut and direction == UP:
                sent.update(zip(clients, tensor.split(list(sizes))))

        wire.taps.append(keep)
        try:
            yield sent
        finally:
            wire.taps.remove(keep)

    def penalty(self, sent: Mapping[int, Tensor], inputs: Mapping[int, Tensor]) -> Tensor | None:
        """``weight`` times the sum over the clients that sent of dCor(their inputs, what they sent)."""
        terms = [distance_correlation(inputs[client], activation) for client, activation in sent.items()]
        return self.weight * torch.stack(terms).sum() if terms else None
