"""Evaluation callbacks: per-round generation score (and FID/KID) per domain, utility at the end.

Lightning glue only: when to evaluate, and logging. The measurements are ``huscf_lightning.metrics``'
``GenerationEvaluator`` (which keeps each domain's classifier and real FID/KID statistics for the
whole fit) and ``evaluate_utility``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl

from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.config import EvaluationSpec
from huscf_lightning.engine.tracking import log_figure, log_json, log_round_metrics, log_text
from huscf_lightning.errors import ConfigError
from huscf_lightning.federation.rounds import RoundState
from huscf_lightning.metrics.classifier import DEFAULT_CLASSIFIER_EPOCHS
from huscf_lightning.metrics.round_evaluation import (
    GENERATION_METRICS,
    GenerationEvaluator,
    checked_generation_metrics,
    score_curves_figure,
)
from huscf_lightning.metrics.utility import UTILITY_METRICS
from huscf_lightning.metrics.utility_report import evaluate_utility, format_utility_table, utility_csv

log = logging.getLogger(__name__)


def require_domain_data(trainer: pl.Trainer, who: str) -> None:
    """Fail at the start of fit, not after a round, when no datamodule can give the real domain data."""
    if not hasattr(getattr(trainer, "datamodule", None), "domain_data"):
        raise ConfigError(
            f"{who} needs each domain's real data (to train its classifier and test against), which comes from "
            "the datamodule: train with a HuSCFDataModule, or turn evaluation off with "
            "evaluation.metrics: [] and evaluation.utility_samples: 0."
        )


class _DomainEvaluation(RoundCallback):
    """What both evaluation callbacks share: the evaluate stage, once on rank 0, the run's `EvaluationSpec` and
    seed, and a datamodule that gives the domains' real data (checked when fit starts)."""

    stage = "evaluate"
    every_rank = False  # once, on rank 0, in a run sharded over processes

    def __init__(self, spec: EvaluationSpec, seed: int, every_n_rounds: int = 1) -> None:
        super().__init__(every_n_rounds)
        self.spec = spec
        self.seed = seed

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        require_domain_data(trainer, type(self).__name__)


class GenerationEvaluation(_DomainEvaluation):
    """Every ``spec.every_n_rounds`` rounds and at the final round: generation score (and FID/KID) of every domain.

    ``spec`` is the run's ``EvaluationSpec`` (checked here; it needs at least one metric), handed on
    whole to the ``GenerationEvaluator``; ``batch_size`` and ``classifier_epochs`` are not settings
    of a run and stay arguments (see ``GenerationEvaluator``).

    Logs ``eval/score/<domain>`` (plus ``eval/fid/<domain>``, ``eval/kid/<domain>``,
    ``eval/kid_std/<domain>``), the means over domains ``eval/score_mean`` / ``eval/fid_mean`` /
    ``eval/kid_mean``, and ``eval/seconds`` (time the evaluation added to the round), at step =
    round. The values also go to ``trainer.callback_metrics`` so pruning and checkpoint callbacks
    can monitor them. The history survives checkpoints; at the end of training a score-curve PNG
    and the history as JSON are logged.
    """

    def __init__(self, spec: EvaluationSpec | None = None, *, seed: int = 0, batch_size: int = 500,
                 classifier_epochs: int = DEFAULT_CLASSIFIER_EPOCHS) -> None:
        spec = spec or EvaluationSpec()
        metrics = checked_generation_metrics(spec)
        if not metrics:
            raise ConfigError(f"GenerationEvaluation needs at least one metric among {list(GENERATION_METRICS)}.")
        if batch_size < 1:
            raise ConfigError(f"GenerationEvaluation needs batch_size >= 1; got {batch_size}.")
        super().__init__(spec, seed, spec.every_n_rounds)
        self.metrics = metrics
        self.batch_size = batch_size
        self.classifier_epochs = classifier_epochs
        self._evaluator: GenerationEvaluator | None = None
        self._features_logged: dict[str, str] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_rounds=self.every_n_rounds, metrics=tuple(self.metrics))

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state_dict["history"]]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self._evaluator = self._new_evaluator(trainer)  # one per fit: the real statistics are this fit's data

    def acts_on(self, round: RoundState) -> bool:
        """Every ``every_n_rounds``-th round, and always the final one (the trained generators' scores)."""
        return super().acts_on(round) or round.is_last

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        round_index = round.index
        started = time.perf_counter()
        row = self.evaluate(trainer, pl_module)
        row["eval/seconds"] = time.perf_counter() - started
        round.metrics.update(row)
        log_round_metrics(trainer, row, round_index)
        self.history.append({"round": round_index, **row})
        scores = ", ".join(
            f"{key.split('/')[-1]} {value:.3f}" for key, value in row.items() if key.startswith("eval/score/")
        )
        log.info("round %d generation scores: %s (evaluation took %.1f s)", round_index, scores, row["eval/seconds"])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.history:
            return
        log_json(trainer, self.history, "generation_scores.json")
        log_figure(trainer, score_curves_figure(self.history, self.metrics), "score_curves.png")

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """All requested metrics for every domain, as flat ``eval/<metric>/<domain>`` keys plus means."""
        if self._evaluator is None:
            self._evaluator = self._new_evaluator(trainer)
        row = self._evaluator(pl_module)
        features = dict(self._evaluator.features)
        if features and features != self._features_logged:
            log.info("FID/KID computed on features: %s", features)
            log_json(trainer, features, "fidelity_features.json")
            self._features_logged = features
        return row

    def _new_evaluator(self, trainer: pl.Trainer) -> GenerationEvaluator:
        return GenerationEvaluator(
            trainer.datamodule.domain_data,
            self.spec,
            seed=self.seed,
            batch_size=self.batch_size,
            classifier_epochs=self.classifier_epochs,
        )


class UtilityEvaluation(_DomainEvaluation):
    """At the end of training: utility of each domain's generated data (see ``metrics.evaluate_utility``).

    ``spec`` is the run's ``EvaluationSpec`` (checked here): ``utility_samples`` generated samples
    per domain train the CNN for ``utility_epochs`` epochs.

    Logs ``utility/<metric>/<domain>`` and ``utility/seconds`` at step = the last completed
    round, a ``utility.csv`` artifact and the table at INFO; the rows stay in ``self.results``.
    """

    def __init__(self, spec: EvaluationSpec | None = None, *, seed: int = 0, batch_size: int = 64,
                 generation_batch_size: int = 500) -> None:
        spec = spec or EvaluationSpec()
        spec.validate()
        if spec.utility_samples < 1 or batch_size < 1 or generation_batch_size < 1:
            raise ConfigError(
                "UtilityEvaluation needs utility_samples >= 1 (0 means: no UtilityEvaluation) and positive batch "
                f"sizes; got utility_samples={spec.utility_samples}, batch_size={batch_size}, "
                f"generation_batch_size={generation_batch_size}."
            )
        super().__init__(spec, seed)
        self.batch_size = batch_size
        self.generation_batch_size = generation_batch_size
        self.results: list[dict[str, float | int | str]] = []
        self._last_round = 0

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        self._last_round = round.index

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        started = time.perf_counter()
        self.results = evaluate_utility(
            pl_module,
            trainer.datamodule.domain_data,
            self.spec.utility_samples,
            self.spec.utility_epochs,
            self.batch_size,
            self.generation_batch_size,
            self.seed,
        )
        metrics = {
            f"utility/{name}/{row['domain']}": float(row[name]) for row in self.results for name in UTILITY_METRICS
        }
        metrics["utility/seconds"] = time.perf_counter() - started
        log_round_metrics(trainer, metrics, self._last_round)
        log_text(trainer, utility_csv(self.results), "utility.csv")
        log.info(
            "utility of generated data (%d samples per domain, %d epochs, real test split):\n%s",
            self.spec.utility_samples,
            self.spec.utility_epochs,
            format_utility_table(self.results),
        )
