"""The METHOD.md CNN, its training, and the on-disk cache of domain classifiers."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from huscf_lightning.data import DomainData, load_domain
from huscf_lightning.metrics.classifier import (
    SmallCNN,
    classifier_accuracy,
    data_fingerprint,
    domain_classifier,
    train_classifier,
)

CLASSIFIER_LOG = "huscf_lightning.metrics.classifier"


def cache_entry(folder: Path, suffix: str) -> Path:
    """The one cache file of the digits domain with this suffix."""
    (path,) = folder.glob(f"digits-*{suffix}")
    return path


@pytest.fixture(scope="module")
def digits() -> DomainData:
    """A small slice of the digits domain: enough to learn, quick to train."""
    full = load_domain("digits")
    train_images, train_labels = full.train_images[:600], full.train_labels[:600]
    return DomainData("digits", train_images, train_labels, full.test_images, full.test_labels, 10)


def test_small_cnn_shapes() -> None:
    model = SmallCNN(num_classes=7)
    x = torch.zeros(5, 1, 28, 28)
    assert model.features(x).shape == (5, 128)
    assert model(x).shape == (5, 7)


def test_training_is_seeded_and_leaves_the_global_rng_alone(digits: DomainData) -> None:
    images, labels = digits.train_images[:128], digits.train_labels[:128]
    state = torch.get_rng_state()
    first = train_classifier(images, labels, 10, epochs=1, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    second = train_classifier(images, labels, 10, epochs=1, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_training_rejects_out_of_range_labels(digits: DomainData) -> None:
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 4\]"):
        train_classifier(digits.train_images[:10], digits.train_labels[:10] + 5, 5, epochs=1)


def test_cache_trains_once_then_loads(digits: DomainData, tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger=CLASSIFIER_LOG):
        model, accuracy = domain_classifier(digits, tmp_path, epochs=2)
    assert "trained classifier for digits" in caplog.text
    assert accuracy > 0.5  # chance is 0.1
    assert accuracy == pytest.approx(classifier_accuracy(model, digits.test_images, digits.test_labels, 10))
    summary = json.loads(cache_entry(tmp_path, ".json").read_text())
    assert summary["test_accuracy"] == accuracy and summary["train_size"] == 600
    assert cache_entry(tmp_path, ".json").name == f"digits-{summary['fingerprint'][:16]}.json"

    weights = cache_entry(tmp_path, ".pt")
    written = weights.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=CLASSIFIER_LOG):
        loaded, loaded_accuracy = domain_classifier(digits, tmp_path, epochs=2)
    assert "trained classifier" not in caplog.text
    assert weights.stat().st_mtime_ns == written
    assert loaded_accuracy == accuracy
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_variants_of_a_domain_keep_their_own_cache_entries(digits: DomainData, tmp_path, caplog) -> None:
    """Two configs of one domain (other data, other settings) train once each, then both load."""
    changed_images = digits.train_images.clone()
    changed_images[0, 0, 0, 0] = 1.0
    changed = replace(digits, train_images=changed_images)
    variants = [(digits, 1), (changed, 1), (digits, 2)]  # (data, epochs)
    with caplog.at_level(logging.INFO, logger=CLASSIFIER_LOG):
        trained = [domain_classifier(data, tmp_path, epochs=epochs)[1] for data, epochs in variants]
    assert caplog.text.count("trained classifier for digits") == 3
    fingerprints = {data_fingerprint(data, epochs=epochs, batch_size=64, seed=0) for data, epochs in variants}
    assert {json.loads(path.read_text())["fingerprint"] for path in tmp_path.glob("digits-*.json")} == fingerprints
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=CLASSIFIER_LOG):
        loaded = [domain_classifier(data, tmp_path, epochs=epochs)[1] for data, epochs in variants]
    assert "trained classifier" not in caplog.text and "retraining" not in caplog.text
    assert loaded == trained


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda path: path.write_bytes(b"not a checkpoint"),
        lambda path: torch.save(torch.zeros(3), path),  # a readable torch file that is no classifier entry
        # the right fingerprint, but no weights
        lambda path: torch.save({"fingerprint": json.loads(path.with_suffix(".json").read_text())["fingerprint"]}, path),
    ],
    ids=["garbage", "tensor", "partial"],
)
def test_corrupt_cache_file_is_rebuilt_with_a_warning(digits: DomainData, tmp_path, corrupt) -> None:
    _, accuracy = domain_classifier(digits, tmp_path, epochs=1)
    corrupt(cache_entry(tmp_path, ".pt"))
    with pytest.warns(RuntimeWarning, match="unreadable"):
        _, rebuilt_accuracy = domain_classifier(digits, tmp_path, epochs=1)
    assert rebuilt_accuracy == accuracy  # same seed, same data: the same classifier again
    assert isinstance(torch.load(cache_entry(tmp_path, ".pt"), weights_only=True), dict)  # the file is whole again
