"""FID and KID of generated images against a domain's real images, computed by torchmetrics.

Features come from the domain classifier's penultimate layer by default: it exists offline for
every domain and knows what matters in 28x28 grey images. Inception-v3 features (torch-fidelity's
``inception-v3-compat`` network, as in the FID literature) are used only when the user points at a
local weights file; nothing is ever downloaded. Every result says which features were used, so
results from the two are never mixed up.

A ``DomainFidelity`` keeps one torchmetrics FID and KID per domain with
``reset_real_features=False``: the real split's features are extracted once and only the generated
side is reset between rounds.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from huscf_lightning.errors import HuSCFError
from huscf_lightning.metrics.classifier import SmallCNN

log = logging.getLogger(__name__)

FIDELITY_METRICS = ("fid", "kid")
INCEPTION_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"


class UnknownMetricError(HuSCFError, ValueError):
    """A metric name that the evaluation does not know."""


class FidelityInputError(HuSCFError, ValueError):
    """Missing or unusable inputs for FID/KID (no features, missing weights, too few images)."""


def check_metric_names(names: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """``names`` as a list, or UnknownMetricError naming the bad ones and the allowed ones."""
    if isinstance(names, str):
        names = [names]
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise UnknownMetricError(
            f"Unknown metric name(s) {unknown}; the allowed names are {list(allowed)}. "
            f"Fix the spelling in the metrics list."
        )
    return list(names)


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] to uint8 in [0, 255], on their device."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class ClassifierFeatures(nn.Module):
    """The domain classifier's 128-d penultimate activations of images in [-1, 1]."""

    def __init__(self, classifier: SmallCNN) -> None:
        super().__init__()
        self.classifier = copy.deepcopy(classifier).float().eval()
        self.num_features = self.classifier.out.in_features

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images.float())


class InceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3 pool features (2048-d) of images in [-1, 1], from a local weights file."""

    num_features = 2048

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        weights = Path(weights)
        if not weights.is_file():
            raise FidelityInputError(
                f"Inception weights file {weights} does not exist. Give the path of a local copy of "
                f"torch-fidelity's {INCEPTION_WEIGHTS_NAME}, or leave inception_weights unset to use the domain "
                f"classifier's features (nothing is downloaded)."
            )
        self.inception = FeatureExtractorInceptionV3(
            "inception-v3-compat", [str(self.num_features)], feature_extractor_weights_path=str(weights)
        ).eval()

    def forward(self, images: Tensor) -> Tensor:
        images = to_uint8(images)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.inception(images)[0]


class _ExtractedFeatures(nn.Module):
    """The feature module FID and KID are given: their inputs are features already extracted once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def default_kid_subset_size(num_generated: int, num_real: int, cap: int = 1000) -> int:
    """KID subset size: at most ``cap`` and half the smaller set, so that subsets differ and kid_std means something."""
    return max(2, min(cap, num_generated // 2, num_real // 2))


def _check_images(generated: Tensor, real: Tensor) -> None:
    if generated.dim() != 4 or real.dim() != 4 or generated.shape[1:] != real.shape[1:]:
        raise FidelityInputError(
            f"Generated and real images must both be (N, C, H, W) with the same C, H, W; got "
            f"{tuple(generated.shape)} and {tuple(real.shape)}."
        )
    if min(generated.shape[0], real.shape[0]) < 2:
        raise FidelityInputError("FID/KID need at least 2 images in each set; generate or load more images.")


class DomainFidelity:
    """FID and/or KID of generated images against one fixed real set, whose statistics are kept across calls.

    The real images' features are extracted on the first call and kept by torchmetrics
    (``reset_real_features=False``); each call resets only the generated side. ``feature`` maps
    images in [-1, 1] to (N, D) features; ``features`` names them in the results. ``kid_subset_size``
    None picks ``default_kid_subset_size`` for each call.
    """

    def __init__(
        self,
        feature: nn.Module,
        features: str,
        real: Tensor,
        metrics: Sequence[str] = FIDELITY_METRICS,
        kid_subsets: int = 100,
        kid_subset_size: int | None = None,
        batch_size: int = 500,
        seed: int = 0,
    ) -> None:
        self.metrics = check_metric_names(metrics, FIDELITY_METRICS)
        if not self.metrics:
            raise UnknownMetricError(f"No fidelity metric requested; ask for some of {list(FIDELITY_METRICS)}.")
        self.feature = feature
        self.features = features
        self.real = real
        self.kid_subset_size = kid_subset_size
        self.batch_size = batch_size
        self.seed = seed
        num_features = getattr(feature, "num_features", None)
        if not isinstance(num_features, int):
            raise FidelityInputError(
                f"The FID/KID feature module {type(feature).__name__} has no integer num_features attribute; set it "
                f"to the length of the feature vector its forward returns (e.g. 128 for the domain classifier)."
            )
        self._fid = (
            FrechetInceptionDistance(_ExtractedFeatures(num_features), reset_real_features=False)
            if "fid" in self.metrics
            else None
        )
        self._kid = None
        if "kid" in self.metrics:
            with warnings.catch_warnings():  # its memory notice: features of one domain's test split are small
                warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
                self._kid = KernelInceptionDistance(
                    _ExtractedFeatures(num_features), subsets=kid_subsets, reset_real_features=False
                )
        self._real_count = 0

    @torch.no_grad()
    def _extract(self, images: Tensor, device: torch.device) -> Tensor:
        self.feature.to(device)
        return torch.cat(
            [self.feature(batch.to(device)).double().cpu() for batch in images.split(self.batch_size)]
        )

    def _update(self, features: Tensor, real: bool) -> None:
        for metric in (self._fid, self._kid):
            if metric is not None:
                metric.update(features, real=real)

    def __call__(self, generated: Tensor) -> dict[str, float | str]:
        """``fid``, ``kid`` and ``kid_std`` (those requested) of ``generated`` and the ``features`` used."""
        _check_images(generated, self.real)
        if not self._real_count:
            self._update(self._extract(self.real, generated.device), real=True)
            self._real_count = self.real.shape[0]
        for metric in (self._fid, self._kid):
            if metric is not None:
                metric.reset()  # the generated side only: reset_real_features=False
        self._update(self._extract(generated, generated.device), real=False)
        out: dict[str, float | str] = {}
        if self._fid is not None:
            out["fid"] = float(self._fid.compute())
        if self._kid is not None:
            subset_size = self.kid_subset_size or default_kid_subset_size(generated.shape[0], self._real_count)
            if subset_size > min(generated.shape[0], self._real_count):
                raise FidelityInputError(
                    f"The KID subset size {subset_size} exceeds the {generated.shape[0]} generated or "
                    f"{self._real_count} real images; pass a kid_subset_size no larger than the smaller set, or None."
                )
            self._kid.subset_size = subset_size
            with torch.random.fork_rng(devices=[]):  # seeded subsets; the caller's RNG is left alone
                torch.manual_seed(self.seed)
                kid, kid_std = self._kid.compute()
            out["kid"], out["kid_std"] = float(kid), float(kid_std)
        out["features"] = self.features
        log.debug("fidelity of %d generated images (%s features): %s", len(generated), self.features, out)
        return out


def fidelity_feature(
    classifier: SmallCNN | None = None, domain: str | None = None, inception_weights: str | Path | None = None
) -> tuple[nn.Module, str]:
    """The feature module for FID/KID and its name: Inception when weights are given, else the classifier's."""
    if inception_weights is not None:
        return InceptionFeatures(inception_weights), f"inception:{Path(inception_weights)}"
    if classifier is not None:
        return ClassifierFeatures(classifier), f"classifier:{domain or 'unnamed'}"
    raise FidelityInputError(
        "FID/KID need features: pass the domain classifier (classifier=...) or a local Inception "
        "weights file (inception_weights=...)."
    )


def fidelity_metrics(
    generated: Tensor,
    real: Tensor,
    metrics: Sequence[str] = FIDELITY_METRICS,
    classifier: SmallCNN | None = None,
    domain: str | None = None,
    inception_weights: str | Path | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, float | str]:
    """FID and/or KID of ``generated`` against ``real`` (both (N, C, H, W) in [-1, 1]), in one call.

    Returns the requested values among ``fid``, ``kid``, ``kid_std`` and ``features``:
    ``"classifier:<domain>"`` or ``"inception:<path>"``. The KID subset size is capped at half
    the smaller set. To score many generated sets against the same real set, keep a
    ``DomainFidelity`` instead: it extracts the real features once.
    """
    metrics = check_metric_names(metrics, FIDELITY_METRICS)
    _check_images(generated, real)
    feature, features = fidelity_feature(classifier, domain, inception_weights)
    subset_size = default_kid_subset_size(generated.shape[0], real.shape[0], kid_subset_size)
    fidelity = DomainFidelity(feature, features, real, metrics, kid_subsets, subset_size, batch_size, seed)
    return fidelity(generated)
