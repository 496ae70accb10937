"""Evaluation metrics: domain classifiers, generation score, FID/KID and utility (METHOD.md "Evaluation")."""

from huscf_lightning.metrics.classifier import (
    SmallCNN,
    classifier_accuracy,
    domain_classifier,
    predict_logits,
    train_classifier,
)
from huscf_lightning.metrics.errors import MetricInputError
from huscf_lightning.metrics.fidelity import (
    FIDELITY_METRICS,
    FidelityInputError,
    UnknownMetricError,
    check_metric_names,
    fidelity_metrics,
)
from huscf_lightning.metrics.generation_score import (
    classifier_probs,
    domain_generation_score,
    generate_uniform,
    generation_score,
)
from huscf_lightning.metrics.utility import UTILITY_METRICS, classification_metrics, utility

__all__ = [
    "FIDELITY_METRICS",
    "UTILITY_METRICS",
    "FidelityInputError",
    "MetricInputError",
    "SmallCNN",
    "UnknownMetricError",
    "check_metric_names",
    "classification_metrics",
    "classifier_accuracy",
    "classifier_probs",
    "domain_classifier",
    "domain_generation_score",
    "fidelity_metrics",
    "generate_uniform",
    "generation_score",
    "predict_logits",
    "train_classifier",
    "utility",
]
