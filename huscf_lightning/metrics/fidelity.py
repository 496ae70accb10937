"""FID and KID of generated images against a domain's real images, computed by torch-fidelity.

Features come from the domain classifier's penultimate layer by default: it exists offline for
every domain and knows what matters in 28x28 grey images. Inception-v3 features are used only
when the user points at a local weights file; nothing is ever downloaded. The returned dict says
which features were used, so results from the two are never mixed up.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch_fidelity
from torch import Tensor
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from huscf_lightning.errors import HuSCFError
from huscf_lightning.metrics.classifier import SmallCNN

log = logging.getLogger(__name__)

FIDELITY_METRICS = ("fid", "kid")
CLASSIFIER_EXTRACTOR = "huscf-domain-classifier"
INCEPTION_EXTRACTOR = "inception-v3-compat"
PENULTIMATE = "penultimate"
LOGITS = "logits"


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


class ClassifierFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor over a SmallCNN: uint8 images in, penultimate features out.

    torch-fidelity builds extractors from a registered class and the keyword arguments of
    ``calculate_metrics``; the classifier travels in as ``huscf_classifier``.
    """

    def __init__(
        self, name: str, features_list: list[str], huscf_classifier: SmallCNN | None = None, **kwargs: Any
    ) -> None:
        super().__init__(name, features_list)
        if huscf_classifier is None:
            raise FidelityInputError(
                f"The '{CLASSIFIER_EXTRACTOR}' feature extractor needs the domain classifier; pass it as "
                f"huscf_classifier=... to torch_fidelity.calculate_metrics (fidelity_metrics does this)."
            )
        self.classifier = copy.deepcopy(huscf_classifier).float()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return (PENULTIMATE, LOGITS)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return PENULTIMATE

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        return torch.zeros(1, 1, 28, 28, dtype=torch.uint8)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if x.dtype != torch.uint8:
            raise FidelityInputError(f"Expected uint8 images (torch-fidelity's convention); got {x.dtype}.")
        images = x.float() / 127.5 - 1.0
        hidden = self.classifier.features(images)
        outputs = {PENULTIMATE: hidden, LOGITS: self.classifier.out(hidden)}
        return tuple(outputs[name].float() for name in self.features_list)


if CLASSIFIER_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(CLASSIFIER_EXTRACTOR, ClassifierFeatureExtractor)


class ImageTensorDataset(Dataset):
    """A stack of uint8 images served one tensor per item, as torch-fidelity's dataset input wants."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] to uint8 in [0, 255] on the CPU."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


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
    """FID and/or KID of ``generated`` against ``real`` (both (N, C, H, W) in [-1, 1]).

    Returns the requested values among ``fid``, ``kid``, ``kid_std`` and ``features``:
    ``"classifier:<domain>"`` or ``"inception:<path>"``. The KID subset size is capped at half
    the smaller set, so that the subsets differ and ``kid_std`` measures something.
    """
    metrics = check_metric_names(metrics, FIDELITY_METRICS)
    if not metrics:
        raise UnknownMetricError(f"No fidelity metric requested; ask for some of {list(FIDELITY_METRICS)}.")
    if generated.dim() != 4 or real.dim() != 4 or generated.shape[1:] != real.shape[1:]:
        raise FidelityInputError(
            f"Generated and real images must both be (N, C, H, W) with the same C, H, W; got "
            f"{tuple(generated.shape)} and {tuple(real.shape)}."
        )
    if min(generated.shape[0], real.shape[0]) < 2:
        raise FidelityInputError("FID/KID need at least 2 images in each set; generate or load more images.")
    options: dict = {}
    if inception_weights is not None:
        weights = Path(inception_weights)
        if not weights.is_file():
            raise FidelityInputError(
                f"Inception weights file {weights} does not exist. Give the path of a local copy of "
                f"torch-fidelity's weights-inception-2015-12-05-6726825d.pth, or leave inception_weights "
                f"unset to use the domain classifier's features (nothing is downloaded)."
            )
        options.update(feature_extractor=INCEPTION_EXTRACTOR, feature_extractor_weights_path=str(weights))
        features = f"inception:{weights}"
        generated_u8, real_u8 = to_uint8(generated), to_uint8(real)
        if generated_u8.shape[1] == 1:
            generated_u8, real_u8 = generated_u8.expand(-1, 3, -1, -1), real_u8.expand(-1, 3, -1, -1)
    elif classifier is not None:
        options.update(feature_extractor=CLASSIFIER_EXTRACTOR, huscf_classifier=classifier)
        features = f"classifier:{domain or 'unnamed'}"
        generated_u8, real_u8 = to_uint8(generated), to_uint8(real)
    else:
        raise FidelityInputError(
            "FID/KID need features: pass the domain classifier (classifier=...) or a local Inception "
            "weights file (inception_weights=...)."
        )
    subset_size = max(2, min(kid_subset_size, generated.shape[0] // 2, real.shape[0] // 2))
    result = torch_fidelity.calculate_metrics(
        input1=ImageTensorDataset(generated_u8),
        input2=ImageTensorDataset(real_u8),
        fid="fid" in metrics,
        kid="kid" in metrics,
        kid_subsets=kid_subsets,
        kid_subset_size=subset_size,
        batch_size=batch_size,
        cuda=generated.is_cuda,
        cache=False,
        save_cpu_ram=True,
        rng_seed=seed,
        verbose=False,
        **options,
    )
    out: dict[str, float | str] = {}
    if "fid" in metrics:
        out["fid"] = float(result[torch_fidelity.KEY_METRIC_FID])
    if "kid" in metrics:
        out["kid"] = float(result[torch_fidelity.KEY_METRIC_KID_MEAN])
        out["kid_std"] = float(result[torch_fidelity.KEY_METRIC_KID_STD])
    out["features"] = features
    log.debug("fidelity of %d generated vs %d real images (%s features): %s", len(generated), len(real), features, out)
    return out
