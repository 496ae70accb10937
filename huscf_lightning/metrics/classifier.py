"""The small CNN of METHOD.md and the per-domain classifiers every evaluation metric relies on.

The generation score, the classifier-feature FID/KID and the utility metric all use the same
architecture (conv 32, conv 64, fc 128). A domain's classifier is trained once on the domain's
real training split and cached on disk in a file named by the domain and a fingerprint of its data
and training settings, so later rounds, runs and sweep trials reuse it instead of retraining, and
two variants of a domain (other options, other data) each keep their own entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_accuracy

from huscf_lightning.metrics.errors import MetricInputError

if TYPE_CHECKING:
    from huscf_lightning.data.registry import DomainData

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = ".huscf_cache/classifiers"
DEFAULT_CLASSIFIER_EPOCHS = 3


class SmallCNN(nn.Module):
    """conv 32 -> conv 64 -> fc 128 -> classes (3x3 convolutions, each followed by 2x2 max-pooling)."""

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        if image_size % 4 != 0:
            raise MetricInputError(
                f"SmallCNN pools twice by 2, so the image side must be a multiple of 4; got {image_size}. "
                f"Resize the images (e.g. to 28x28) before classifying them."
            )
        self.num_classes = num_classes
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.hidden = nn.Sequential(nn.Linear(64 * (image_size // 4) ** 2, 128), nn.ReLU())
        self.out = nn.Linear(128, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate (128-d) activations: the feature space of the classifier FID/KID."""
        return self.hidden(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))


def _check_labelled_images(images: Tensor, labels: Tensor, num_classes: int) -> None:
    if images.dim() != 4:
        raise MetricInputError(
            f"Expected images of shape (N, C, H, W); got {tuple(images.shape)}. Add the channel axis "
            f"(e.g. images.unsqueeze(1)) for grey-scale images."
        )
    if labels.shape != (images.shape[0],):
        raise MetricInputError(
            f"Expected one integer label per image: {images.shape[0]} images but labels of shape "
            f"{tuple(labels.shape)}."
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise MetricInputError(
            f"Labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}; got range "
            f"[{int(labels.min())}, {int(labels.max())}]. Pass the right num_classes."
        )


def _seeded_cnn(num_classes: int, in_channels: int, image_size: int, seed: int) -> SmallCNN:
    """A SmallCNN initialised from ``seed`` under a forked RNG (module init would draw from the global one)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN(num_classes, in_channels, image_size)


def train_classifier(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> SmallCNN:
    """Train a SmallCNN with Adam on (images, labels) on the images' device; deterministic in ``seed``.

    The global RNG is left untouched (initialisation runs under a forked RNG), so training a
    classifier in the middle of a GAN run does not change the run's own random stream.
    """
    _check_labelled_images(images, labels, num_classes)
    if epochs < 1 or batch_size < 1:
        raise MetricInputError(f"epochs and batch_size must be at least 1; got epochs={epochs}, batch_size={batch_size}.")
    device = images.device
    model = _seeded_cnn(num_classes, images.shape[1], images.shape[-1], seed).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    labels = labels.to(device)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=generator).to(device)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Logits of ``model`` over ``images`` in eval mode, batched to bound memory."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(batch) for batch in images.split(batch_size)])
    model.train(was_training)
    return logits


def classifier_accuracy(model: nn.Module, images: Tensor, labels: Tensor, num_classes: int) -> float:
    """Top-1 accuracy of ``model`` on a labelled set."""
    preds = predict_logits(model, images).argmax(dim=1)
    return float(multiclass_accuracy(preds, labels.to(preds.device), num_classes, average="micro"))


def data_fingerprint(data: DomainData, **settings: object) -> str:
    """Hash of the domain's tensors and the training settings: changes whenever a retrain is needed."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps({"num_classes": data.num_classes, **settings}, sort_keys=True).encode())
    for tensor in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


FINGERPRINT_CHARS = 16
"""Hex characters of the fingerprint in a cache file's name: enough to tell a domain's variants apart."""


def cache_stem(cache_dir: Path, domain: str, fingerprint: str) -> Path:
    """``<cache_dir>/<domain>-<fingerprint prefix>``: the path of a classifier entry, less its suffix."""
    return cache_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', domain)}-{fingerprint[:FINGERPRINT_CHARS]}"


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Write through a temporary file and rename, so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_CORRUPT_CACHE_ERRORS = (
    OSError, RuntimeError, EOFError, pickle.UnpicklingError, KeyError, IndexError, TypeError, ValueError, AttributeError
)


def _load_cached(weights: Path, fingerprint: str) -> tuple[SmallCNN, float] | None:
    """The cached classifier if it matches ``fingerprint``; None when absent, stale or unreadable."""
    if not weights.exists():
        return None
    try:
        entry = torch.load(weights, map_location="cpu", weights_only=True)
        if not isinstance(entry, dict):
            raise TypeError(f"it holds a {type(entry).__name__}, not a classifier entry")
        if entry["fingerprint"] != fingerprint:
            log.info("classifier cache %s is for other data or settings; retraining", weights)
            return None
        model = _seeded_cnn(int(entry["num_classes"]), int(entry["in_channels"]), int(entry["image_size"]), 0)
        model.load_state_dict(entry["state_dict"])
        accuracy = float(entry["test_accuracy"])
    except _CORRUPT_CACHE_ERRORS as error:
        warnings.warn(
            f"Classifier cache file {weights} is unreadable ({type(error).__name__}: {error}); "
            f"retraining the classifier and rewriting the file.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    model.eval()
    return model, accuracy


def domain_classifier(
    data: DomainData,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    epochs: int = DEFAULT_CLASSIFIER_EPOCHS,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[SmallCNN, float]:
    """The domain's classifier (on the CPU, eval mode) and its real test accuracy, trained on first use.

    Cached as ``<cache_dir>/<domain>-<fingerprint>.pt`` (weights, fingerprint, accuracy) with a
    readable ``.json`` of the same name beside it; the fingerprint covers the domain's data and the
    training settings, so each variant of a domain keeps its own entry. An unreadable entry is
    rebuilt with a warning.
    """
    cache_dir = Path(cache_dir)
    fingerprint = data_fingerprint(data, epochs=epochs, batch_size=batch_size, seed=seed)
    stem = cache_stem(cache_dir, data.name, fingerprint)
    weights = stem.parent / f"{stem.name}.pt"  # not with_suffix: a dot in a domain name is no suffix
    cached = _load_cached(weights, fingerprint)
    if cached is not None:
        log.debug("loaded classifier for %s from %s", data.name, weights)
        return cached
    started = time.perf_counter()
    train_images = data.train_images.detach().float().cpu()
    model = train_classifier(
        train_images, data.train_labels.cpu(), data.num_classes, epochs, batch_size=batch_size, seed=seed
    )
    accuracy = classifier_accuracy(model, data.test_images.float().cpu(), data.test_labels.cpu(), data.num_classes)
    seconds = time.perf_counter() - started
    entry = {
        "fingerprint": fingerprint,
        "num_classes": data.num_classes,
        "in_channels": train_images.shape[1],
        "image_size": train_images.shape[-1],
        "state_dict": model.state_dict(),
        "test_accuracy": accuracy,
    }
    _atomic_write(weights, lambda path: torch.save(entry, path))
    summary = {
        "domain": data.name,
        "fingerprint": fingerprint,
        "test_accuracy": accuracy,
        "epochs": epochs,
        "train_size": int(train_images.shape[0]),
        "test_size": int(data.test_images.shape[0]),
        "train_seconds": round(seconds, 2),
    }
    _atomic_write(stem.parent / f"{stem.name}.json", lambda path: Path(path).write_text(json.dumps(summary, indent=2)))
    log.info("trained classifier for %s in %.1f s: test accuracy %.4f", data.name, seconds, accuracy)
    return model, accuracy
