"""FID and KID through torch-fidelity with the domain classifier's features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from huscf_lightning.data import load_domain
from huscf_lightning.metrics import FidelityInputError, SmallCNN, UnknownMetricError, fidelity_metrics, train_classifier
from huscf_lightning.metrics.fidelity import to_uint8


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
        a, b = (classifier.features(to_uint8(x).float() / 127.5 - 1).double().numpy() for x in (generated, real))
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
