"""Per-round generation evaluation: every domain's generation score and FID/KID, and their curves.

A ``GenerationEvaluator`` lives for a whole run and keeps what does not change between rounds:
each domain's classifier (trained or loaded from the cache once) and each domain's FID/KID
objects, which hold the real test split's feature statistics, so a round only generates and
scores its samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from huscf_lightning.config import EvaluationSpec
from huscf_lightning.metrics.classifier import DEFAULT_CLASSIFIER_EPOCHS, SmallCNN, domain_classifier
from huscf_lightning.metrics.domain_samples import GeneratingModel, domain_samples
from huscf_lightning.metrics.fidelity import FIDELITY_METRICS, DomainFidelity, check_metric_names, fidelity_feature
from huscf_lightning.metrics.generation_score import classifier_probs, generation_score

if TYPE_CHECKING:
    from huscf_lightning.data.registry import DomainData

log = logging.getLogger(__name__)

GENERATION_METRICS = ("score", *FIDELITY_METRICS)


def checked_generation_metrics(spec: EvaluationSpec) -> list[str]:
    """``spec.metrics`` as a list, after checking the whole spec: the one check that the evaluator and the
    evaluation callback run on the spec they are given.

    An unknown metric name is an ``UnknownMetricError`` (as for any metrics list in
    ``huscf_lightning.metrics``); anything else ``EvaluationSpec.validate`` rejects is its ``ConfigError``.
    """
    metrics = check_metric_names(spec.metrics, GENERATION_METRICS)
    spec.validate()
    return metrics


class GenerationEvaluator:
    """Scores every domain's generator with ``spec.metrics`` (among ``GENERATION_METRICS``), round after round.

    ``domain_data`` gives a domain's real data. From ``spec`` (an ``EvaluationSpec``, checked here)
    it uses ``metrics``, ``num_samples``, ``classifier_cache`` and ``inception_weights``; ``batch_size``
    (generation, scoring and FID/KID features) and ``classifier_epochs`` (a classifier that is not
    cached yet) are not settings of a run. After each call, ``features`` maps each domain to the
    features its FID/KID used (``classifier:<domain>`` or ``inception:<path>``).
    """

    def __init__(
        self,
        domain_data: Callable[[str], DomainData],
        spec: EvaluationSpec | None = None,
        *,
        seed: int = 0,
        batch_size: int = 500,
        classifier_epochs: int = DEFAULT_CLASSIFIER_EPOCHS,
    ) -> None:
        self.domain_data = domain_data
        self.spec = spec or EvaluationSpec()
        self.metrics = checked_generation_metrics(self.spec)
        self.seed = seed
        self.batch_size = batch_size
        self.classifier_epochs = classifier_epochs
        self.features: dict[str, str] = {}
        self._classifiers: dict[str, SmallCNN] = {}
        self._fidelity: dict[str, DomainFidelity] = {}

    def __call__(self, model: GeneratingModel) -> dict[str, float]:
        """All metrics for every domain, as flat ``eval/<metric>/<domain>`` keys plus ``eval/<metric>_mean``.

        A domain's first evaluation also reports its classifier's real test accuracy as
        ``eval/classifier_accuracy/<domain>``.
        """
        row: dict[str, float] = {}
        for domain in model.domain_names:
            row.update(self._evaluate_domain(model, domain))
        for metric in self.metrics:
            values = [value for key, value in row.items() if key.startswith(f"eval/{metric}/")]
            row[f"eval/{metric}_mean"] = sum(values) / len(values)
        return row

    def _classifier(self, domain: str, row: dict[str, float]) -> SmallCNN:
        if domain not in self._classifiers:
            classifier, accuracy = domain_classifier(
                self.domain_data(domain), self.spec.classifier_cache, epochs=self.classifier_epochs, seed=self.seed
            )
            self._classifiers[domain] = classifier
            row[f"eval/classifier_accuracy/{domain}"] = accuracy
        return self._classifiers[domain]

    def _domain_fidelity(self, domain: str, classifier: SmallCNN) -> DomainFidelity:
        if domain not in self._fidelity:
            feature, features = fidelity_feature(classifier, domain, self.spec.inception_weights)
            real = self.domain_data(domain).test_images  # stays on the CPU; moved batch by batch
            fidelity = [metric for metric in self.metrics if metric in FIDELITY_METRICS]
            self._fidelity[domain] = DomainFidelity(
                feature, features, real, fidelity, batch_size=self.batch_size, seed=self.seed
            )
        return self._fidelity[domain]

    def _evaluate_domain(self, model: GeneratingModel, domain: str) -> dict[str, float]:
        row: dict[str, float] = {}
        classifier = self._classifier(domain, row).to(model.device)
        images, _, _ = domain_samples(model, domain, self.spec.num_samples, self.batch_size, self.seed)
        if "score" in self.metrics:
            row[f"eval/score/{domain}"] = generation_score(classifier_probs(classifier, images, self.batch_size))
        if any(metric in FIDELITY_METRICS for metric in self.metrics):
            result = self._domain_fidelity(domain, classifier)(images)
            self.features[domain] = str(result.pop("features"))
            row.update({f"eval/{name}/{domain}": float(value) for name, value in result.items()})
        return row


def score_curves_figure(history: Sequence[dict[str, float]], metrics: Sequence[str]) -> Figure:
    """One panel per metric, one line per domain, over the evaluated rounds."""
    figure = Figure(figsize=(5 * len(metrics), 3.5))
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    rounds = [row["round"] for row in history]
    for axis, metric in zip(axes, metrics):
        prefix = f"eval/{metric}/"
        domains = sorted({key[len(prefix) :] for row in history for key in row if key.startswith(prefix)})
        for domain in domains:
            axis.plot(rounds, [row.get(prefix + domain, float("nan")) for row in history], marker="o", label=domain)
        axis.set_xlabel("round")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel("generation score" if metric == "score" else metric.upper())
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    return figure
