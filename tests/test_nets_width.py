"""The width option of the reference networks: 1.0 is the paper's network, smaller values scale channels."""

from __future__ import annotations

import pytest
import torch

from huscf_lightning.nets import NetworkError, ReferenceDiscriminator, ReferenceGenerator


def _conv_channels(net: torch.nn.Module) -> list[int]:
    return [m.out_channels for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


def test_default_width_is_the_papers_network() -> None:
    g, d = ReferenceGenerator(), ReferenceDiscriminator()
    assert g.blocks[0].linear.out_features == 256 * 7 * 7
    assert _conv_channels(g) == [128, 128, 64, 1]
    assert _conv_channels(d) == [64, 128, 128, 256]
    assert d.blocks[-1][1].in_features == 256 * 3 * 3


@pytest.mark.parametrize("width", [0.25, 0.5])
def test_width_scales_every_channel_count_and_keeps_the_blocks(width: float) -> None:
    g, d = ReferenceGenerator(width=width), ReferenceDiscriminator(width=width)
    assert (g.num_blocks, d.num_blocks) == (5, 5)
    assert _conv_channels(g) == [round(c * width) for c in (128, 128, 64)] + [1]
    assert _conv_channels(d) == [round(c * width) for c in (64, 128, 128, 256)]
    labels = torch.arange(4)
    images = g(torch.randn(4, 100), labels)
    assert images.shape == (4, 1, 28, 28)
    assert d(images, labels).shape == (4, 1)


@pytest.mark.parametrize("width", [0.0, -1.0])
def test_a_width_that_is_not_positive_names_the_fix(width: float) -> None:
    with pytest.raises(NetworkError, match="width"):
        ReferenceGenerator(width=width)
    with pytest.raises(NetworkError, match="width"):
        ReferenceDiscriminator(width=width)
