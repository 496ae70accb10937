"""Per-sample clipping and Gaussian noise on what crosses a cut, and the wire that applies them.

A sample's tensor is scaled down to an L2 norm of at most ``clip * sqrt(values per sample)`` (``clip`` is an
RMS bound per value, so one setting fits every cut whatever its size), then every value gets Gaussian noise of
standard deviation ``multiplier * clip``. In the backward of an activation the clipping factor is a constant
(the client differentiates through the scaling it applied, not through the norm), and the noise adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from huscf_lightning.privacy.spec import PrivacySpec
from huscf_lightning.split.wire import UP, Crossing, Wire


def clip_factors(samples: Tensor, clip: float) -> Tensor:
    """(B,) factors min(1, bound / ||sample||) that clip each row of ``samples`` (B, ...) to the L2 norm
    ``clip * sqrt(values per sample)``; detached."""
    flat = samples.detach().reshape(samples.shape[0], -1)
    bound = clip * flat.shape[1] ** 0.5
    norms = flat.norm(dim=1)
    return (bound / norms.clamp_min(torch.finfo(flat.dtype).tiny)).clamp(max=1.0)


def clip_and_noise(samples: Tensor, clip: float, multiplier: float, generator: torch.Generator | None) -> Tensor:
    """``samples`` (B, ...) clipped per row (`clip_factors`) plus Gaussian noise of std ``multiplier * clip``
    drawn from ``generator`` (a CPU generator: the noise is drawn there and moved, so it is the same on any device)."""
    if samples.shape[0] == 0:
        return samples
    factors = clip_factors(samples, clip).view(-1, *([1] * (samples.dim() - 1)))
    noise = torch.randn(samples.shape, generator=generator, dtype=samples.dtype)
    return samples * factors + (multiplier * clip) * noise.to(samples.device)


class NoisyWire(Wire):
    """The wire with `clip_and_noise` on every client-to-server crossing: the activations a client's heads send
    (with autograd: the client's backward goes through its clipping) and, with ``spec.noise_on_gradients``, the
    gradients its tails return. Server-to-client crossings are carried as they are. The noise is one seeded stream."""

    def __init__(self, spec: PrivacySpec, seed: int) -> None:
        super().__init__()
        self.spec = spec
        self.noise = torch.Generator().manual_seed(seed * 7919 + 17)

    def send_group(self, tensor: Tensor, clients: Sequence[int], sizes: Sequence[int], cut: str, direction: str) -> Tensor:
        if direction == UP and isinstance(tensor, Tensor) and tensor.is_floating_point():
            tensor = clip_and_noise(tensor, self.spec.clip, self.spec.noise_multiplier, self.noise)
        return super().send_group(tensor, clients, sizes, cut, direction)

    def transport(self, tensor: Tensor, crossing: Crossing, gradient: bool) -> Tensor:
        carried = super().transport(tensor, crossing, gradient)
        if gradient and crossing.direction == UP and self.spec.noise_on_gradients:
            return clip_and_noise(carried, self.spec.gradient_clip, self.spec.noise_multiplier, self.noise)
        return carried

    def state_dict(self) -> dict:
        """The counts, and the noise stream's position (a resumed run draws the noise it would have drawn)."""
        return super().state_dict() | {"noise": self.noise.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "noise" in state:
            self.noise.set_state(state["noise"])
