"""FID and KID through torchmetrics with the domain classifier's features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import Tensor, nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from huscf_lightning.data import load_domain
from huscf_lightning.metrics import FidelityInputError, SmallCNN, UnknownMetricError, fidelity_metrics, train_classifier
from huscf_lightning.metrics.fidelity import ClassifierFeatures, DomainFidelity, InceptionFeatures


@pytest.fixture(scope="module")
def setup() -> tuple[SmallCNN, torch.Tensor]:
    data = load_domain("digits")
    classifier = train_classifier(data.train_images[:500], data.train_labels[:500], 10, epochs=1)
    return classifier, data.test_images[:300]


def noisy(images: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    return (images + sigma * noise).clamp(-1, 1)


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(setup) -> None:
    classifier, real = setup
    results = [
        fidelity_metrics(noisy(real, sigma), real, classifier=classifier, domain="digits")
        for sigma in (0, 0.2, 0.5, 1.0)
    ]
    fids = [r["fid"] for r in results]
    kids = [r["kid"] for r in results]
    assert abs(fids[0]) < 1e-6
    assert fids == sorted(fids) and fids[1] > 1e-3
    assert kids[1:] == sorted(kids[1:]) and kids[-1] > 10 * abs(kids[0])
    assert results[0]["features"] == "classifier:digits"


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # dead ReLU units: singular covariances
def test_fid_equals_the_frechet_distance_of_penultimate_features(setup) -> None:
    classifier, real = setup
    generated = noisy(real, 0.3)
    with torch.no_grad():
        a, b = (classifier.features(x).double().numpy() for x in (generated, real))
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    got = fidelity_metrics(generated, real, metrics=["fid"], classifier=classifier)
    assert got["fid"] == pytest.approx(expected, rel=1e-3)
    assert set(got) == {"fid", "features"}


def test_unknown_metric_name_is_a_clear_error(setup) -> None:
    classifier, real = setup
    with pytest.raises(UnknownMetricError, match=r"\['is'\].*allowed names are \['fid', 'kid'\]"):
        fidelity_metrics(real, real, metrics=["fid", "is"], classifier=classifier)


def test_missing_inception_weights_fail_without_download(setup, tmp_path) -> None:
    _, real = setup
    with pytest.raises(FidelityInputError, match="does not exist.*nothing is downloaded"):
        fidelity_metrics(real, real, inception_weights=tmp_path / "inception.pth")


def test_features_are_required(setup) -> None:
    _, real = setup
    with pytest.raises(FidelityInputError, match="need features"):
        fidelity_metrics(real, real)


class CountingFeatures(nn.Module):
    """The classifier's features, counting the images it is asked for."""

    def __init__(self, classifier: SmallCNN) -> None:
        super().__init__()
        self.inner = ClassifierFeatures(classifier)
        self.num_features = self.inner.num_features
        self.images_seen = 0

    def forward(self, images: Tensor) -> Tensor:
        self.images_seen += images.shape[0]
        return self.inner(images)


def test_torchmetrics_values_equal_torch_fidelity_on_the_same_features(setup) -> None:
    """The previous implementation (torch-fidelity's FID and KID over the same features) gives the same values."""
    classifier, real = setup
    generated = noisy(real, 0.3)
    with torch.no_grad():
        a, b = (classifier.features(x).double() for x in (generated, real))
    expected_fid = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), False)
    # the subset size is the whole set, so every subset is the same set and both KIDs are exact
    expected_kid = kid_features_to_metric(a, b, kid_subsets=3, kid_subset_size=len(a), verbose=False)
    fidelity = DomainFidelity(ClassifierFeatures(classifier), "classifier:digits", real, kid_subsets=3, kid_subset_size=len(a))
    got = fidelity(generated)
    assert got["fid"] == pytest.approx(expected_fid["frechet_inception_distance"], rel=1e-4)
    assert got["kid"] == pytest.approx(expected_kid["kernel_inception_distance_mean"], rel=1e-6)
    assert got["kid_std"] == pytest.approx(0.0, abs=1e-12)


def test_real_features_are_extracted_once_across_rounds(setup) -> None:
    classifier, real = setup
    feature = CountingFeatures(classifier)
    fidelity = DomainFidelity(feature, "classifier:digits", real, batch_size=128)
    rounds = [noisy(real[:200], sigma) for sigma in (0.5, 0.1)]
    results = [fidelity(images) for images in rounds]
    assert feature.images_seen == len(real) + 2 * 200  # the real split once, each round's samples once
    assert results[1]["fid"] < results[0]["fid"] and results[1]["kid"] < results[0]["kid"]
    # each round equals a fresh one-off computation: the kept real statistics are the real set's
    for images, result in zip(rounds, results):
        fresh = fidelity_metrics(images, real, classifier=classifier, domain="digits")
        assert [result[key] for key in ("fid", "kid", "kid_std")] == pytest.approx(
            [fresh[key] for key in ("fid", "kid", "kid_std")], rel=1e-6
        )


class _UntrainedInception(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception-v3 with random weights: the shape of a weights file, written offline."""

    def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random initialisation
        return None


def test_inception_features_from_a_local_weights_file(tmp_path) -> None:
    weights, empty = tmp_path / "inception.pth", tmp_path / "empty.pth"
    torch.save({}, empty)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = _UntrainedInception("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
        torch.save(network.state_dict(), weights)
    images = torch.rand(6, 1, 28, 28) * 2 - 1
    result = fidelity_metrics(images[:3], images[3:], inception_weights=weights, kid_subsets=2)
    assert result["features"] == f"inception:{weights}"
    assert InceptionFeatures(weights)(images[:2]).shape == (2, 2048)
    assert result["fid"] > 0 and set(result) == {"fid", "kid", "kid_std", "features"}


def test_a_kid_subset_larger_than_a_set_is_a_clear_error(setup) -> None:
    classifier, real = setup
    fidelity = DomainFidelity(ClassifierFeatures(classifier), "classifier:digits", real, ["kid"], kid_subset_size=50)
    with pytest.raises(FidelityInputError, match="KID subset size 50 exceeds the 20 generated"):
        fidelity(real[:20])
