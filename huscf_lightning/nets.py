"""Block networks: a GAN network written as an ordered list of blocks.

Splitting never looks inside a block, so any network written as a `BlockNetwork` can be split
at block boundaries. The first block receives the class labels (so labels never need to leave
the client that owns it); every other block maps one tensor to one tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from huscf_lightning.errors import HuSCFError


class NetworkError(HuSCFError, ValueError):
    """A network that cannot be split: the message names the fix."""


class LabelledBlock(nn.Module):
    """Base class of a first block: ``forward(x, labels)``; the rest of a network is plain."""

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class BlockNetwork(nn.Module):
    """An ordered list of blocks; ``blocks[0]`` takes ``(x, labels)``, the others ``x``.

    Subclass it (or pass a list of modules) to bring your own generator or discriminator.
    """

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(blocks) < 3:
            raise NetworkError(
                f"A split network needs at least 3 blocks (client head, server, client tail); "
                f"got {len(blocks)}. Write the network as more blocks (a block is a main layer "
                f"plus its norm and activation)."
            )
        self.blocks = nn.ModuleList(blocks)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        x = self.blocks[0](x, labels)
        for block in self.blocks[1:]:
            x = block(x)
        return x


class _GeneratorInput(LabelledBlock):
    """Label embedding concatenated to z, then Linear -> BN1d -> ReLU -> view (C, 7, 7)."""

    def __init__(self, z_dim: int, num_classes: int, channels: int, side: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, num_classes)
        self.linear = nn.Linear(z_dim + num_classes, channels * side * side)
        self.norm = nn.BatchNorm1d(channels * side * side)
        self.shape = (channels, side, side)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        h = torch.cat([x, self.embed(labels)], dim=1)
        h = torch.relu(self.norm(self.linear(h)))
        return h.view(h.shape[0], *self.shape)


class _DiscriminatorInput(LabelledBlock):
    """Label embedded as a second image channel, then Conv 2->64 k4 s2 p1 -> BN -> LeakyReLU."""

    def __init__(self, num_classes: int, image_side: int, image_channels: int, out_channels: int) -> None:
        super().__init__()
        self.side = image_side
        self.embed = nn.Embedding(num_classes, image_side * image_side)
        self.conv = nn.Conv2d(image_channels + 1, out_channels, 4, 2, 1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        label_plane = self.embed(labels).view(x.shape[0], 1, self.side, self.side)
        h = self.conv(torch.cat([x, label_plane], dim=1))
        return nn.functional.leaky_relu(self.norm(h), 0.2)


def _conv_block(conv: nn.Module, channels: int, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), act)


def _scaled(channels: int, width: float) -> int:
    """A reference channel count scaled by ``width`` (at least 1 channel)."""
    return max(1, round(channels * width))


def _check_width(width: float) -> None:
    if not width > 0:
        raise NetworkError(
            f"width scales the reference networks' channel counts and must be > 0; got {width}. Use 1.0 for the "
            f"paper's networks or a smaller value (e.g. 0.5) for a lighter network that trains faster on a CPU."
        )


class ReferenceGenerator(BlockNetwork):
    """The reference 28x28 conditional generator of METHOD.md: 5 blocks, output in [-1, 1].

    ``width`` scales every channel count (1.0, the default, is the paper's network; 0.5 halves the
    channels and cuts the arithmetic about fourfold, for short CPU runs). Blocks and cut options are the same.
    """

    def __init__(self, z_dim: int = 100, num_classes: int = 10, image_channels: int = 1, width: float = 1.0) -> None:
        _check_width(width)
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.init_args = {"z_dim": z_dim, "num_classes": num_classes, "image_channels": image_channels, "width": width}
        c1, c2, c3 = (_scaled(c, width) for c in (256, 128, 64))
        super().__init__(
            [
                _GeneratorInput(z_dim, num_classes, c1, 7),
                _conv_block(nn.ConvTranspose2d(c1, c2, 4, 2, 1), c2, nn.ReLU()),
                _conv_block(nn.ConvTranspose2d(c2, c2, 3, 1, 1), c2, nn.ReLU()),
                _conv_block(nn.ConvTranspose2d(c2, c3, 4, 2, 1), c3, nn.ReLU()),
                nn.Sequential(nn.ConvTranspose2d(c3, image_channels, 3, 1, 1), nn.Tanh()),
            ]
        )


class ReferenceDiscriminator(BlockNetwork):
    """The reference 28x28 conditional discriminator of METHOD.md: 5 blocks, output a probability.

    ``width`` scales every channel count as in `ReferenceGenerator` (1.0 is the paper's network).
    """

    def __init__(
        self, num_classes: int = 10, image_channels: int = 1, image_side: int = 28, width: float = 1.0
    ) -> None:
        _check_width(width)
        self.num_classes = num_classes
        self.init_args = {"num_classes": num_classes, "image_channels": image_channels, "image_side": image_side, "width": width}
        c1, c2, c3 = (_scaled(c, width) for c in (64, 128, 256))
        lrelu = nn.LeakyReLU(0.2)
        super().__init__(
            [
                _DiscriminatorInput(num_classes, image_side, image_channels, c1),
                _conv_block(nn.Conv2d(c1, c2, 4, 2, 1), c2, lrelu),
                _conv_block(nn.Conv2d(c2, c2, 3, 1, 1), c2, lrelu),
                _conv_block(nn.Conv2d(c2, c3, 4, 2, 1), c3, lrelu),
                nn.Sequential(nn.Flatten(), nn.Linear(c3 * 3 * 3, 1), nn.Sigmoid()),
            ]
        )
