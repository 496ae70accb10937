"""SampleGrids: a PNG grid of generated samples per domain per round, one labelled row per class."""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.engine.tracking import log_artifact_file
from huscf_lightning.federation.rounds import RoundState

_DPI = 100


def labelled_grid(images: Tensor, per_class: int, scale: int = 3, pad: int = 2, label_width: int = 36) -> Figure:
    """A figure of ``images`` (N, C, H, W) in [-1, 1], ``per_class`` to a row, each row's class drawn at its start.

    Row ``r`` holds class ``r`` (images ordered class by class). Images are upscaled ``scale`` times
    (nearest neighbour) so a 28x28 sample is visible at a glance; the figure is exactly
    ``label_width + per_class * (side * scale + pad) + pad`` pixels wide and
    ``rows * (side * scale + pad) + pad`` high, so its size says what it holds.
    """
    rows = images.shape[0] // per_class
    upscaled = torch.nn.functional.interpolate(images.float().cpu(), scale_factor=scale, mode="nearest")
    grid = make_grid(upscaled, nrow=per_class, padding=pad, normalize=True, value_range=(-1, 1), pad_value=1.0)
    grid = grid.permute(1, 2, 0).numpy()
    height, grid_width = grid.shape[:2]
    width = label_width + grid_width
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(figure)
    axes = figure.add_axes((label_width / width, 0.0, grid_width / width, 1.0))
    axes.imshow(grid, interpolation="nearest")
    axes.set_axis_off()
    cell = images.shape[-2] * scale + pad
    for row in range(rows):
        centre = 1.0 - (pad + row * cell + cell / 2) / height
        figure.text(label_width / 2 / width, centre, str(row), ha="center", va="center", fontsize=14, weight="bold")
    return figure


class SampleGrids(RoundCallback):
    """At every round end, ``per_class`` samples of every class from the first client of each domain.

    One grid per domain per round, logged as ``samples/<domain>/round_NNN.png``: a row per class,
    labelled with the class index, upscaled ``scale`` times. The noise is the same every round, so
    grids of successive rounds compare sample by sample.
    """

    stage = "evaluate"
    every_rank = False  # once, on rank 0, in a run sharded over processes

    def __init__(self, per_class: int = 8, seed: int = 0, scale: int = 3) -> None:
        super().__init__()
        self.per_class = per_class
        self.seed = seed
        self.scale = scale

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
                labelled_grid(images, self.per_class, self.scale).savefig(file, dpi=_DPI)
                log_artifact_file(trainer, file, f"samples/{domain}")
