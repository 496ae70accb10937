"""Evaluation metrics: domain classifiers, generation score, FID/KID and utility (METHOD.md "Evaluation").

The pure measures (``generation_score``, ``fidelity_metrics``, ``classification_metrics``,
``utility``), the objects a run keeps (``GenerationEvaluator``, ``DomainFidelity``) and the per-run
pieces the callbacks and the ``evaluate`` command share (``domain_samples``, ``evaluate_utility``).
"""

from huscf_lightning.metrics.classifier import (
    SmallCNN,
    classifier_accuracy,
    domain_classifier,
    predict_logits,
    train_classifier,
)
from huscf_lightning.metrics.domain_samples import GeneratingModel, domain_client, domain_samples, evaluation_rng
from huscf_lightning.metrics.errors import MetricInputError
from huscf_lightning.metrics.fidelity import (
    FIDELITY_METRICS,
    ClassifierFeatures,
    DomainFidelity,
    FidelityInputError,
    InceptionFeatures,
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
from huscf_lightning.metrics.round_evaluation import GENERATION_METRICS, GenerationEvaluator, score_curves_figure
from huscf_lightning.metrics.utility import UTILITY_METRICS, classification_metrics, utility
from huscf_lightning.metrics.utility_report import evaluate_utility, format_utility_table, utility_csv

__all__ = [
    "FIDELITY_METRICS",
    "GENERATION_METRICS",
    "UTILITY_METRICS",
    "ClassifierFeatures",
    "DomainFidelity",
    "FidelityInputError",
    "GeneratingModel",
    "GenerationEvaluator",
    "InceptionFeatures",
    "MetricInputError",
    "SmallCNN",
    "UnknownMetricError",
    "check_metric_names",
    "classification_metrics",
    "classifier_accuracy",
    "classifier_probs",
    "domain_classifier",
    "domain_client",
    "domain_generation_score",
    "domain_samples",
    "evaluate_utility",
    "evaluation_rng",
    "fidelity_metrics",
    "format_utility_table",
    "generate_uniform",
    "generation_score",
    "predict_logits",
    "score_curves_figure",
    "train_classifier",
    "utility",
    "utility_csv",
]
