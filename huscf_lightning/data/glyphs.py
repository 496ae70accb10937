"""Glyphs: letters A-J rendered from matplotlib's bundled fonts and jittered, a NotMNIST-like domain.

The templates are rendered once per process; the jitter (affine warp, stroke width, stroke noise)
is vectorised and draws only from the generator it is given, so a seed gives the same images.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from huscf_lightning.data.pixels import IMAGE_SIZE
from huscf_lightning.data.registry import DomainError

GLYPH_LETTERS = "ABCDEFGHIJ"
# matplotlib's bundled fonts that carry Latin capitals (the Display, STIXNonUni/STIXSiz and
# cmex10 files have no such glyphs and LastResort draws placeholder boxes). A fixed list keeps
# the glyphs domain identical for a seed on every machine.
GLYPH_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
    "cmmi10.ttf",
    "cmsy10.ttf",
)


@lru_cache(maxsize=1)
def render_glyph_templates() -> Tensor:
    """Letters A-J from each of matplotlib's bundled fonts: (fonts, 10, 28, 28) in [0, 1].

    Each glyph is rendered once with FreeType at 48 px, cropped to its ink, padded square and
    resized (antialiased) into a 20x20 box centred in 28x28, the way MNIST digits are framed.
    """
    import matplotlib
    from matplotlib.ft2font import FT2Font

    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    missing = [name for name in GLYPH_FONTS if not (font_dir / name).is_file()]
    if missing:
        raise DomainError(
            f"matplotlib's bundled fonts {missing} are missing from {font_dir}; reinstall matplotlib "
            f"(>= 3.7) so the glyphs domain can be rendered."
        )
    templates = torch.zeros(len(GLYPH_FONTS), len(GLYPH_LETTERS), IMAGE_SIZE, IMAGE_SIZE)
    for f, font_name in enumerate(GLYPH_FONTS):
        font = FT2Font(str(font_dir / font_name))
        font.set_size(48, 72)
        for c, letter in enumerate(GLYPH_LETTERS):
            font.set_text(letter)
            font.draw_glyphs_to_bitmap(antialiased=True)
            bitmap = torch.from_numpy(np.asarray(font.get_image(), dtype=np.float32) / 255.0)
            rows, cols = torch.nonzero(bitmap > 0, as_tuple=True)
            ink = bitmap[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
            side = max(ink.shape)
            top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
            square = F.pad(ink, (left, side - ink.shape[1] - left, top, side - ink.shape[0] - top))
            box = F.interpolate(square[None, None], size=(20, 20), mode="bilinear", antialias=True, align_corners=False)
            templates[f, c, 4:24, 4:24] = box[0, 0].clamp(0.0, 1.0)
    return templates


def jitter_glyphs(
    templates: Tensor,
    fonts: Tensor,
    letters: Tensor,
    generator: torch.Generator,
    max_rotation: float,
    scale_range: tuple[float, float],
    max_shear: float,
    max_shift: float,
    max_stroke: float,
    stroke_noise: float,
) -> Tensor:
    """Random affine warp, stroke width change and stroke noise of chosen templates, vectorised.

    Returns (N, 1, 28, 28) in [0, 1]. The warp samples rotation (degrees), scale, shear and
    shift (pixels) uniformly per image and applies them with one ``affine_grid``/``grid_sample``;
    the stroke width blends each image towards its 3x3 dilation (thicker) or erosion (thinner);
    stroke noise dims ink pixels by up to ``stroke_noise``.
    """
    count = len(letters)

    def uniform(low: float, high: float) -> Tensor:
        return torch.rand(count, generator=generator) * (high - low) + low

    angle = torch.deg2rad(uniform(-max_rotation, max_rotation))
    scale = uniform(*scale_range)
    shear = uniform(-max_shear, max_shear)
    shift = torch.stack([uniform(-max_shift, max_shift), uniform(-max_shift, max_shift)], dim=1) * (2.0 / IMAGE_SIZE)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin + shear, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
    )
    source = templates[fonts, letters].unsqueeze(1)
    grid = F.affine_grid(theta, [count, 1, IMAGE_SIZE, IMAGE_SIZE], align_corners=False)
    images = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    width = uniform(-max_stroke, max_stroke).view(-1, 1, 1, 1)
    thicker = F.max_pool2d(images, 3, stride=1, padding=1)
    thinner = -F.max_pool2d(-images, 3, stride=1, padding=1)
    images = images + width.clamp(min=0) * (thicker - images) + (-width).clamp(min=0) * (thinner - images)
    dimming = 1.0 - stroke_noise * torch.rand(images.shape, generator=generator)
    return (images * dimming).clamp_(0.0, 1.0)
