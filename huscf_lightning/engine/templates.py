"""The unsplit generator and discriminator every client's copies are cut from, and the checks on them.

They are held outside the LightningModule's parameters, so they add nothing to its state dict, to
``.to()``, or to the parameters a distributed strategy syncs; a tiny forward of them tells, before any
split, whether the networks fit together and what each block receives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from huscf_lightning.errors import ConfigError
from huscf_lightning.nets import BlockNetwork
from huscf_lightning.split.selection import GanNetworks


@dataclass(frozen=True)
class NetworkTemplates:
    """The unsplit G and D of a run, and what G is conditioned on (noise size, classes)."""

    generator: BlockNetwork
    discriminator: BlockNetwork
    z_dim: int
    num_classes: int

    def networks(self, batch_size: int) -> GanNetworks:
        """Both networks as the latency model profiles them, at the per-client training batch."""
        return GanNetworks(self.generator, self.discriminator, batch_size, self.z_dim, self.num_classes)

    def check(self) -> None:
        """A tiny forward of both, so a mismatched network fails here, clearly."""
        try:
            out = self._forward()
        except Exception as err:  # a user network of the wrong shape: say which and what to check
            raise ConfigError(
                f"The generator and discriminator do not fit together ({type(err).__name__}: {err}). The generator's "
                f"first block must take (z of size z_dim={self.z_dim}, labels) and the discriminator must take the "
                f"generator's images and labels; check z_dim, num_classes and the image shape."
            ) from err
        if out.shape[-1] != 1:
            raise ConfigError(f"The discriminator must output one probability per sample; got shape {tuple(out.shape)}.")

    def block_input_shapes(self) -> dict[str, list[tuple[int, ...]]]:
        """Per network (``"G"``, ``"D"``), each block's per-sample input shape (a sharded server calls a block
        on an empty batch)."""
        shapes: dict[str, list[tuple[int, ...]]] = {"G": [], "D": []}
        hooks = [
            block.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(tuple(args[0].shape[1:])))
            for net, seen in ((self.generator, shapes["G"]), (self.discriminator, shapes["D"]))
            for block in net.blocks
        ]
        try:
            self._forward()
        finally:
            for hook in hooks:
                hook.remove()
        return shapes

    @torch.no_grad()
    def _forward(self) -> torch.Tensor:
        """D(G(z, y), y) for two samples in eval mode, each network's mode restored after."""
        labels = torch.arange(2) % self.num_classes
        was = self.generator.training, self.discriminator.training
        try:
            self.generator.eval()
            self.discriminator.eval()
            return self.discriminator(self.generator(torch.zeros(2, self.z_dim), labels), labels)
        finally:
            self.generator.train(was[0])
            self.discriminator.train(was[1])
