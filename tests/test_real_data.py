"""Real MNIST and KMNIST test sets from ../shared/data: seeded stratified 8,000 / 2,000 splits, and the real-data scenario twins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from huscf_lightning.data import DomainSpec, HuSCFDataModule, clear_domain_cache, load_domain, read_idx
from huscf_lightning.data.loaders import FASHION_MNIST_DEBIAN_ROOT

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SCENARIOS = REPO / "configs" / "scenarios"
needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"the real MNIST/KMNIST test sets are not at {SHARED_DATA} (the project's shared/ folder beside the repository)",
)
needs_fashion_mnist = pytest.mark.skipif(
    not Path(FASHION_MNIST_DEBIAN_ROOT, "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Debian's dataset-fashion-mnist is not installed ({FASHION_MNIST_DEBIAN_ROOT} is missing); "
    "`apt-get install dataset-fashion-mnist` to run this test",
)


def pixel_bytes(images: torch.Tensor) -> list[bytes]:
    """Each image back as its uint8 pixels, sorted: a multiset to compare image sets by."""
    pixels = ((images + 1) * 127.5).round().to(torch.uint8)
    return sorted(image.numpy().tobytes() for image in pixels)


@needs_shared_data
@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_the_real_test_set_splits_8000_2000_stratified_disjoint_and_seeded(name: str) -> None:
    raw = SHARED_DATA / name.upper() / "raw"
    all_pixels, all_labels = read_idx(raw / "t10k-images-idx3-ubyte.gz"), read_idx(raw / "t10k-labels-idx1-ubyte.gz")
    data = load_domain(name, root=str(SHARED_DATA), seed=0)
    assert data.train_images.shape == (8000, 1, 28, 28) and data.test_images.shape == (2000, 1, 28, 28)
    assert "official test set" in data.source and "8000 train / 2000 held-out" in data.source
    # Stratified: every class keeps its share of the 10,000 on both sides, within one image.
    share = torch.from_numpy(np.bincount(all_labels, minlength=10)).double() * 0.8
    assert (torch.bincount(data.train_labels, minlength=10).double() - share).abs().max() <= 1
    # Disjoint and complete: train and held-out together are the 10,000 images, each once.
    assert pixel_bytes(torch.cat([data.train_images, data.test_images])) == sorted(image.tobytes() for image in all_pixels)
    assert sorted(torch.cat([data.train_labels, data.test_labels]).tolist()) == sorted(all_labels.tolist())
    # Seeded: the same seed gives the same split after the cache is gone; another seed another one.
    clear_domain_cache()
    again = load_domain(name, root=str(SHARED_DATA), seed=0)
    assert again is not data and torch.equal(again.train_images, data.train_images)
    assert torch.equal(again.test_labels, data.test_labels)
    assert not torch.equal(load_domain(name, root=str(SHARED_DATA), seed=1).test_images, data.test_images)
    assert load_domain(name, root=str(SHARED_DATA), seed=0) is again  # cached: no repeated preparation


@needs_shared_data
@needs_fashion_mnist
@pytest.mark.parametrize(
    ("stem", "domains", "sizes"),
    [
        ("real1", [("mnist", 8, "iid")], [1000] * 8),
        ("real4", [("mnist", 4, "noniid"), ("fashion_mnist", 4, "noniid")], [666, 1000, 1000, 1000, 1000, 666, 1000, 1000]),
        ("real6", [(name, 4, "iid") for name in ("mnist", "fashion_mnist", "kmnist", "glyphs")], [500] * 16),
    ],
)
def test_the_real_data_twins_parse_and_partition(monkeypatch, stem: str, domains: list, sizes: list[int]) -> None:
    monkeypatch.chdir(REPO)  # the twins' root ../shared/data is relative to the project root
    content = yaml.safe_load((SCENARIOS / "real" / f"{stem}.yaml").read_text())
    assert list(content) == ["data"] and content["data"]["scenario"] == stem
    data = content["data"]
    module = HuSCFDataModule(**{**data, "domains": [DomainSpec(**entry) for entry in data["domains"]]})
    module.setup()
    assert [(d.name, d.clients, d.distribution) for d in module.domains] == domains
    assert module.num_clients == sum(clients for _, clients, _ in domains)
    assert max(module.client_sizes) <= data["cap"] and min(module.client_sizes) >= data["batch_size"]
    assert module.client_sizes == sizes  # seed 0, as the README states
    for client, part in enumerate(module.partitions):
        labels = module.client_data(client)[1]
        assert set(labels.tolist()).isdisjoint(part.dropped_labels)
    mnist = module.domain_data("mnist")
    assert len(mnist.train_labels) == 8000 and "official test set" in mnist.source
