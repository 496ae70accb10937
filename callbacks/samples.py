"""SampleGrids: a PNG grid of generated samples per domain per round."""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from torchvision.utils import save_image

from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.rounds import RoundState
from huscf_lightning.tracking import log_artifact_file


class SampleGrids(RoundCallback):
    """At every round end, ``per_class`` samples of every class from the first client of each domain."""

    stage = "evaluate"

    def __init__(self, per_class: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.per_class = per_class
        self.seed = seed

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        r = round.index
        noise = torch.Generator().manual_seed(self.seed)
        labels = torch.arange(pl_module.num_classes).repeat_interleave(self.per_class)
        z = torch.randn(labels.shape[0], pl_module.z_dim, generator=noise)
        with tempfile.TemporaryDirectory() as tmp:
            for domain in pl_module.domain_names:
                client = pl_module.client_domains.index(domain)
                images = pl_module.generate(client, labels, z.to(pl_module.device))
                file = Path(tmp) / f"round_{r:03d}.png"
                save_image(images, file, nrow=self.per_class, normalize=True, value_range=(-1, 1))
                log_artifact_file(trainer, file, f"samples/{domain}")
