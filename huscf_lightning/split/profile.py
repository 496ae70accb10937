"""Block profiling: per-block forward FLOPs, backward FLOPs and output bytes of a block network.

The latency model needs, for every block, how much work it is and how large the tensor it hands
to the next block is. These are measured on the real modules with
`torch.utils.flop_counter.FlopCounterMode`, so any user network written as blocks is profiled the
same way as the reference one.

What FlopCounterMode counts: the matrix products and convolutions (``mm``, ``addmm``, ``bmm``,
``convolution`` and transposed convolution, attention kernels), forward and backward, at 2 FLOPs
per multiply-add. What it leaves out: elementwise work (bias adds outside ``addmm``, activations,
``tanh``/``sigmoid``), normalisation (BatchNorm), embedding look-ups, concatenation, reshapes and
the loss. For convolutional GAN blocks those are a small fraction of the work.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from huscf_lightning.errors import HuSCFError

FP32_BYTES = 4

_CACHE: dict[str, NetworkProfile] = {}


class BlockProfileError(HuSCFError, ValueError):
    """A network that cannot be profiled; the message names the fix."""


@dataclass(frozen=True)
class BlockProfile:
    """Work and output size of one block at the profiled batch size."""

    forward_flops: int
    backward_flops: int
    output_bytes: int

    def to_dict(self) -> dict:
        return {
            "forward_flops": self.forward_flops,
            "backward_flops": self.backward_flops,
            "output_bytes": self.output_bytes,
        }


@dataclass(frozen=True)
class NetworkProfile:
    """The block profiles of one network, in block order, at one batch size."""

    blocks: tuple[BlockProfile, ...]
    batch_size: int

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def forward_flops(self) -> list[int]:
        return [b.forward_flops for b in self.blocks]

    @property
    def backward_flops(self) -> list[int]:
        return [b.backward_flops for b in self.blocks]

    @property
    def output_bytes(self) -> list[int]:
        return [b.output_bytes for b in self.blocks]

    def to_dict(self) -> dict:
        return {"batch_size": self.batch_size, "blocks": [b.to_dict() for b in self.blocks]}

    @classmethod
    def from_dict(cls, data: dict) -> NetworkProfile:
        return cls(tuple(BlockProfile(**b) for b in data["blocks"]), int(data["batch_size"]))


@dataclass(frozen=True)
class GanProfile:
    """Profiles of the generator and the discriminator."""

    generator: NetworkProfile
    discriminator: NetworkProfile

    def network(self, net: str) -> NetworkProfile:
        """Profile of network ``"G"`` or ``"D"``."""
        if net == "G":
            return self.generator
        if net == "D":
            return self.discriminator
        raise BlockProfileError(f"Unknown network {net!r}; use 'G' or 'D'.")

    def to_dict(self) -> dict:
        return {"generator": self.generator.to_dict(), "discriminator": self.discriminator.to_dict()}


def _counted_flops(mode: FlopCounterMode) -> int:
    return int(mode.get_total_flops())


def _blocks_of(net: nn.Module) -> nn.ModuleList:
    blocks = getattr(net, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise BlockProfileError(
            f"{type(net).__name__} has no `blocks` ModuleList, so it cannot be cut at block boundaries. "
            f"Write the network as a huscf_lightning.nets.BlockNetwork (a list of blocks)."
        )
    if len(blocks) < 3:
        raise BlockProfileError(
            f"{type(net).__name__} has {len(blocks)} blocks; a split network needs at least 3 "
            f"(client head, server part, client tail). Write it as more blocks."
        )
    return blocks


def _measure(net: nn.Module, example_input: Tensor, labels: Tensor) -> NetworkProfile:
    """Run every block forward and backward on a private copy, counting FLOPs per block."""
    blocks = copy.deepcopy(_blocks_of(net)).train()
    measured = []
    x = example_input.detach()
    for index, block in enumerate(blocks):
        # Block 0's input (noise or images plus labels) needs no gradient; later inputs do,
        # because their gradient is what crosses the cut to the previous block.
        x_in = x.detach().requires_grad_(index > 0)
        with FlopCounterMode(display=False) as forward_mode:
            out = block(x_in, labels) if index == 0 else block(x_in)
        with FlopCounterMode(display=False) as backward_mode:
            out.backward(torch.ones_like(out))
        measured.append(
            BlockProfile(
                forward_flops=_counted_flops(forward_mode),
                backward_flops=_counted_flops(backward_mode),
                output_bytes=int(out.numel()) * FP32_BYTES,
            )
        )
        x = out
    return NetworkProfile(tuple(measured), int(example_input.shape[0]))


def profile_network(net: nn.Module, example_input: Tensor, labels: Tensor) -> NetworkProfile:
    """Per-block FLOPs and output bytes of ``net`` on this input; cached per architecture and shape.

    The network itself is not touched (a copy runs, so BatchNorm statistics and gradients of the
    caller's modules stay as they were).
    """
    key = f"{net!r}|{tuple(example_input.shape)}|{example_input.dtype}|{tuple(labels.shape)}"
    cached = _CACHE.get(key)
    if cached is None:
        cached = _measure(net, example_input, labels)
        _CACHE[key] = cached
    return cached


def profile_gan(
    generator: nn.Module,
    discriminator: nn.Module,
    batch_size: int,
    z_dim: int = 100,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
) -> GanProfile:
    """Profiles of G on (z, labels) and D on (images, labels) at ``batch_size``."""
    if batch_size < 1:
        raise BlockProfileError(f"batch_size must be a positive number of samples; got {batch_size}.")
    generator_seed = torch.Generator().manual_seed(0)
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator_seed)
    z = torch.randn(batch_size, z_dim, generator=generator_seed)
    images = torch.randn(batch_size, *image_shape, generator=generator_seed)
    return GanProfile(
        generator=profile_network(generator, z, labels),
        discriminator=profile_network(discriminator, images, labels),
    )
