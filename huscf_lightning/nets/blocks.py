"""Block networks: a GAN network written as an ordered list of blocks.

Splitting never looks inside a block, so any network written as a `BlockNetwork` can be split
at block boundaries. The first block receives the class labels (so labels never need to leave
the client that owns it); every other block maps one tensor to one tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

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
