"""The reference networks of the paper (METHOD.md): a 5-block conditional generator and discriminator for
1x28x28 images, with a ``width`` multiplier on their channels."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from huscf_lightning.nets.blocks import BlockNetwork, LabelledBlock, NetworkError


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
