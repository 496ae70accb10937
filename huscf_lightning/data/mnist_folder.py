"""Folders of MNIST-format IDX files: the full train/test layout, or a test set alone split in two.

``mnist`` and ``kmnist`` read torchvision's raw layout (``root/MNIST/raw``, ``root/KMNIST/raw``),
``fashion_mnist`` a flat folder (Debian's package). Files may be gzipped or not. A folder that
holds only the official test files (as ``../shared/data`` does on this project's machines) is
split, seeded and stratified, into a training and a held-out part, and says so in its log line
and in ``DomainData.source``. Decoded files are kept per process (keyed by path, size and
modification time), so loading a domain again under another seed only redoes the split.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from huscf_lightning.data.idx import IDX_FILES, idx_file, read_idx, require_idx_file
from huscf_lightning.data.pixels import IMAGE_SIZE, pixels_to_unit_range
from huscf_lightning.data.registry import DomainData, DomainError, register_file_cache
from huscf_lightning.data.splits import stratified_split

log = logging.getLogger(__name__)

NUM_CLASSES = 10


def read_labelled_set(folder: Path, part: str, how_to_get: str) -> tuple[Tensor, Tensor]:
    """The images in [-1, 1] and int64 labels of ``part`` ("train" or "test") of an IDX folder (cached)."""
    paths = [require_idx_file(folder, IDX_FILES[f"{part}_{kind}"], how_to_get) for kind in ("images", "labels")]
    stamps = [(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in paths]
    return _decode_labelled_set(*stamps)


@lru_cache(maxsize=8)
def _decode_labelled_set(
    images_stamp: tuple[str, int, int], labels_stamp: tuple[str, int, int]
) -> tuple[Tensor, Tensor]:
    """Decode and check an images file and its labels file, named by (path, size, mtime) stamps."""
    images_path, labels_path = Path(images_stamp[0]), Path(labels_stamp[0])
    pixels, labels = read_idx(images_path), read_idx(labels_path)
    if pixels.ndim != 3 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DomainError(
            f"{images_path} holds an array of shape {pixels.shape}, not 28x28 images (N, 28, 28); replace it "
            f"with the original MNIST-format images file."
        )
    if labels.shape != (len(pixels),):
        raise DomainError(
            f"{labels_path} holds labels of shape {labels.shape} but {images_path} holds {len(pixels)} images; "
            f"the two files must come from the same release, one label per image, so copy both again."
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DomainError(
            f"{labels_path} holds label {int(labels.max())}, outside 0..{NUM_CLASSES - 1}; it is not an "
            f"MNIST-family label file, so replace it with the original labels file."
        )
    return pixels_to_unit_range(torch.from_numpy(pixels.copy()), 255.0), torch.from_numpy(labels.astype(np.int64))


register_file_cache(_decode_labelled_set.cache_clear)


def read_train_and_test(name: str, folder: Path, how_to_get: str) -> DomainData:
    """A domain from the four IDX files of its official train and test sets."""
    return DomainData(
        name,
        *read_labelled_set(folder, "train", how_to_get),
        *read_labelled_set(folder, "test", how_to_get),
        num_classes=NUM_CLASSES,
    )


def split_test_set(name: str, folder: Path, seed: int, held_out: int, how_to_get: str) -> DomainData:
    """A domain made from the official test set alone: a seeded stratified train / held-out split."""
    images, labels = read_labelled_set(folder, "test", how_to_get)
    if not NUM_CLASSES <= held_out <= len(labels) - NUM_CLASSES:
        raise DomainError(
            f"Domain {name!r}: held_out={held_out} cannot split the {len(labels)} test images of {folder} with "
            f"every class on both sides; set the entry's `options: {{held_out: ...}}` between {NUM_CLASSES} and "
            f"{len(labels) - NUM_CLASSES}."
        )
    split = stratified_split(images, labels, held_out, seed)
    source = (
        f"{name} official test set ({len(labels)} images from {folder}) split {len(split[1])} train / "
        f"{len(split[3])} held-out, stratified, seed {seed}; the training files are absent"
    )
    log.warning("Domain %s: %s. Every figure for this domain comes from the official test set.", name, source)
    return DomainData(name, *split, num_classes=NUM_CLASSES, source=source)


def download_torchvision(dataset_name: str, root: str) -> None:
    """Fetch a torchvision MNIST-family dataset's raw files into ``root/<dataset_name>/raw``."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, dataset_name)
    try:
        for train in (True, False):
            dataset_class(root, train=train, download=True)
    except (RuntimeError, OSError) as error:
        raise DomainError(
            f"torchvision could not download {dataset_name} into {Path(root) / dataset_name / 'raw'} "
            f"({str(error).strip()}); run on a machine with network access, or copy the files there and "
            f"drop `download: true`."
        ) from error


def load_torchvision_layout(
    name: str, dataset_name: str, root: str, seed: int, download: bool, held_out: int
) -> DomainData:
    """``root/<dataset_name>/raw``: the full train and test sets, or the test set alone split in two."""
    if download:
        download_torchvision(dataset_name, root)
    folder = Path(root) / dataset_name / "raw"
    how_to_get = (
        f"Either set `options: {{download: true}}` on a machine with network access, or put "
        f"{', '.join(IDX_FILES.values())} (torchvision's raw layout, .gz or extracted; the two t10k files "
        f"alone are split into train and held-out) into {folder}, or point `root:` at the folder that holds "
        f"{dataset_name}/raw (on this project's machines ../shared/data holds the MNIST and KMNIST test sets)."
    )
    if idx_file(folder, IDX_FILES["train_images"]) or idx_file(folder, IDX_FILES["train_labels"]):
        return read_train_and_test(name, folder, how_to_get)
    if idx_file(folder, IDX_FILES["test_images"]) or idx_file(folder, IDX_FILES["test_labels"]):
        return split_test_set(name, folder, seed, held_out, how_to_get)
    state = "does not exist" if not folder.is_dir() else "holds none of its IDX files"
    raise DomainError(f"Domain {name!r}: the folder {folder} {state}. {how_to_get}")
