"""Sample grids: one labelled row per class, upscaled, the size the layout promises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from huscf_lightning.callbacks.samples import labelled_grid

SIDE, PER_CLASS, CLASSES, SCALE, PAD, LABEL_WIDTH = 28, 4, 10, 3, 2, 36


def _grid_png(tmp_path: Path, images: torch.Tensor) -> np.ndarray:
    file = tmp_path / "grid.png"
    labelled_grid(images, PER_CLASS, scale=SCALE, pad=PAD, label_width=LABEL_WIDTH).savefig(file, dpi=100)
    return np.asarray(Image.open(file).convert("L"), dtype=np.float32)


def _class_images() -> torch.Tensor:
    """Class c's images are flat at a grey level that rises with c, so rows are told apart by brightness."""
    levels = torch.linspace(-0.8, 0.8, CLASSES).repeat_interleave(PER_CLASS)
    return levels.view(-1, 1, 1, 1).expand(-1, 1, SIDE, SIDE).clone()


def test_grid_is_upscaled_with_a_label_column(tmp_path: Path) -> None:
    pixels = _grid_png(tmp_path, _class_images())
    cell = SIDE * SCALE + PAD
    assert pixels.shape == (CLASSES * cell + PAD, LABEL_WIDTH + PER_CLASS * cell + PAD)


def test_each_row_holds_its_class_and_a_different_label(tmp_path: Path) -> None:
    pixels = _grid_png(tmp_path, _class_images())
    cell = SIDE * SCALE + PAD
    rows = [slice(PAD + r * cell, PAD + r * cell + SIDE * SCALE) for r in range(CLASSES)]
    first_image = slice(LABEL_WIDTH + PAD, LABEL_WIDTH + PAD + SIDE * SCALE)
    brightness = [pixels[r, first_image].mean() for r in rows]
    assert all(a < b for a, b in zip(brightness, brightness[1:])), brightness  # row r shows class r
    labels = [pixels[r, :LABEL_WIDTH] for r in rows]
    assert all((label < 128).sum() > 20 for label in labels)  # a dark character is drawn at every row start
    assert all(not np.array_equal(a, b) for i, a in enumerate(labels) for b in labels[i + 1:])  # and they differ
