"""Evaluation callbacks: per-round generation score (and FID/KID) per domain, utility at the end.

Each domain is judged through the generator of its first client (that client's head, the shared
server blocks and its tail), scored by the domain's cached real-data classifier. Evaluation draws
its noise under a forked, fixed-seed RNG: rounds are compared on the same noise, and turning
evaluation on or off does not change the training run's random stream.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.config import ConfigError
from huscf_lightning.metrics.classifier import DEFAULT_CACHE_DIR, DEFAULT_CLASSIFIER_EPOCHS, SmallCNN, domain_classifier
from huscf_lightning.metrics.fidelity import FIDELITY_METRICS, check_metric_names, fidelity_metrics
from huscf_lightning.metrics.generation_score import SampleFn, classifier_probs, generate_uniform, generation_score
from huscf_lightning.metrics.utility import UTILITY_METRICS, utility
from huscf_lightning.rounds import RoundState
from huscf_lightning.tracking import log_figure, log_json, log_round_metrics, log_text

log = logging.getLogger(__name__)

GENERATION_METRICS = ("score", *FIDELITY_METRICS)


def domain_client(client_domains: Sequence[str], domain: str) -> int:
    """Index of the first client holding ``domain``: the generator that represents the domain."""
    for client, client_domain in enumerate(client_domains):
        if client_domain == domain:
            return client
    raise ConfigError(
        f"No client holds domain {domain!r} (client domains: {sorted(set(client_domains))}); "
        f"evaluate only the domains the scenario assigns to clients."
    )


def require_domain_data(trainer: pl.Trainer, who: str) -> None:
    """Fail at the start of fit, not after a round, when no datamodule can give the real domain data."""
    if not hasattr(getattr(trainer, "datamodule", None), "domain_data"):
        raise ConfigError(
            f"{who} needs each domain's real data (to train its classifier and test against), which comes from "
            "the datamodule: train with a HuSCFDataModule, or turn evaluation off with "
            "evaluation.metrics: [] and evaluation.utility_samples: 0."
        )


@contextmanager
def _evaluation_rng(device: torch.device, seed: int) -> Iterator[None]:
    """A fixed-seed RNG for evaluation that leaves the training RNG exactly as it was."""
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


def _sample_fn(pl_module: pl.LightningModule, client: int) -> SampleFn:
    """Labels -> images from ``client``'s generator, on the module's device."""
    return lambda labels: pl_module.generate(client, labels.to(pl_module.device))


class GenerationEvaluation(RoundCallback):
    """Every ``every_n_rounds`` rounds: generation score (and optionally FID/KID) of every domain.

    Logs ``eval/score/<domain>`` (plus ``eval/fid/<domain>``, ``eval/kid/<domain>``,
    ``eval/kid_std/<domain>``), the means over domains ``eval/score_mean`` / ``eval/fid_mean`` /
    ``eval/kid_mean``, and ``eval/seconds`` (time the evaluation added to the round), at step =
    round. The values also go to ``trainer.callback_metrics`` so pruning and checkpoint callbacks
    can monitor them, and into the round (``round.metrics``) for the round callbacks after it. The
    history survives checkpoints; at the end of training a score-curve PNG and the history as JSON are logged.
    """

    stage = "evaluate"

    def __init__(
        self,
        every_n_rounds: int = 1,
        num_samples: int = 5000,
        metrics: Sequence[str] = ("score",),
        batch_size: int = 500,
        classifier_epochs: int = DEFAULT_CLASSIFIER_EPOCHS,
        cache_dir: str | Path = DEFAULT_CACHE_DIR,
        inception_weights: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        if every_n_rounds < 1 or num_samples < 2 or batch_size < 1:
            raise ConfigError(
                f"GenerationEvaluation needs every_n_rounds >= 1, num_samples >= 2 and batch_size >= 1; got "
                f"{every_n_rounds}, {num_samples} and {batch_size}."
            )
        super().__init__(every_n_rounds)
        self.metrics = check_metric_names(metrics, GENERATION_METRICS)
        if not self.metrics:
            raise ConfigError(f"GenerationEvaluation needs at least one metric among {list(GENERATION_METRICS)}.")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.classifier_epochs = classifier_epochs
        self.cache_dir = cache_dir
        self.inception_weights = inception_weights
        self.seed = seed
        self._classifiers: dict[str, tuple[SmallCNN, float]] = {}
        self._features_logged: dict[str, str] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_rounds=self.every_n_rounds, metrics=tuple(self.metrics))

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(row) for row in state_dict["history"]]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        require_domain_data(trainer, type(self).__name__)

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
        row: dict[str, float] = {}
        features: dict[str, str] = {}
        for domain in pl_module.domain_names:
            row.update(self._evaluate_domain(trainer, pl_module, domain, features))
        for metric in self.metrics:
            values = [value for key, value in row.items() if key.startswith(f"eval/{metric}/")]
            row[f"eval/{metric}_mean"] = sum(values) / len(values)
        if features and features != self._features_logged:
            log.info("FID/KID computed on features: %s", features)
            log_json(trainer, features, "fidelity_features.json")
            self._features_logged = features
        return row

    def _classifier(self, trainer: pl.Trainer, domain: str, row: dict[str, float]) -> SmallCNN:
        if domain not in self._classifiers:
            data = trainer.datamodule.domain_data(domain)
            self._classifiers[domain] = domain_classifier(
                data, self.cache_dir, epochs=self.classifier_epochs, seed=self.seed
            )
            row[f"eval/classifier_accuracy/{domain}"] = self._classifiers[domain][1]
        return self._classifiers[domain][0]

    def _evaluate_domain(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, domain: str, features: dict[str, str]
    ) -> dict[str, float]:
        row: dict[str, float] = {}
        classifier = self._classifier(trainer, domain, row).to(pl_module.device)
        client = domain_client(pl_module.client_domains, domain)
        with _evaluation_rng(pl_module.device, self.seed):
            images, _ = generate_uniform(
                _sample_fn(pl_module, client), self.num_samples, pl_module.num_classes, self.batch_size, self.seed
            )
        if "score" in self.metrics:
            row[f"eval/score/{domain}"] = generation_score(classifier_probs(classifier, images, self.batch_size))
        fidelity = [metric for metric in self.metrics if metric in FIDELITY_METRICS]
        if fidelity:
            real = trainer.datamodule.domain_data(domain).test_images  # stays on the CPU, where FID reads it
            result = fidelity_metrics(
                images,
                real,
                fidelity,
                classifier=classifier,
                domain=domain,
                inception_weights=self.inception_weights,
                batch_size=self.batch_size,
                seed=self.seed,
            )
            features[domain] = str(result.pop("features"))
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


def evaluate_utility(
    pl_module: pl.LightningModule,
    datamodule: Any,
    num_samples: int = 30000,
    epochs: int = 15,
    batch_size: int = 64,
    generation_batch_size: int = 500,
    seed: int = 0,
) -> list[dict[str, float | int | str]]:
    """Per domain: train the METHOD.md CNN on ``num_samples`` generated samples, test on the real test split.

    Returns one row per domain: domain, client (whose generator was used), num_samples, the
    metrics of ``UTILITY_METRICS`` and the seconds it took.
    """
    results: list[dict[str, float | int | str]] = []
    for domain in pl_module.domain_names:
        started = time.perf_counter()
        client = domain_client(pl_module.client_domains, domain)
        data = datamodule.domain_data(domain)
        with _evaluation_rng(pl_module.device, seed):
            images, labels = generate_uniform(
                _sample_fn(pl_module, client), num_samples, pl_module.num_classes, generation_batch_size, seed
            )
        scores = utility(
            images, labels, data.test_images, data.test_labels, data.num_classes, epochs, seed, batch_size
        )
        results.append(
            {
                "domain": domain,
                "client": client,
                "num_samples": num_samples,
                **scores,
                "seconds": time.perf_counter() - started,
            }
        )
    return results


def utility_csv(results: Sequence[dict[str, Any]]) -> str:
    """The utility rows as CSV text (header from the first row)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(results[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(results)
    return buffer.getvalue()


def format_utility_table(results: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of the utility metrics, one line per domain."""
    header = f"{'domain':<16}" + "".join(f"{name:>10}" for name in UTILITY_METRICS)
    lines = [header, "-" * len(header)]
    for row in results:
        lines.append(f"{row['domain']:<16}" + "".join(f"{row[name]:>10.4f}" for name in UTILITY_METRICS))
    return "\n".join(lines)


class UtilityEvaluation(RoundCallback):
    """At the end of training: utility of each domain's generated data (see ``evaluate_utility``).

    Logs ``utility/<metric>/<domain>`` and ``utility/seconds`` at step = the last completed
    round, a ``utility.csv`` artifact and the table at INFO; the rows stay in ``self.results``.
    """

    stage = "evaluate"

    def __init__(
        self,
        num_samples: int = 30000,
        epochs: int = 15,
        batch_size: int = 64,
        generation_batch_size: int = 500,
        seed: int = 0,
    ) -> None:
        if num_samples < 1 or epochs < 1 or batch_size < 1 or generation_batch_size < 1:
            raise ConfigError(
                f"UtilityEvaluation needs positive num_samples, epochs and batch sizes; got num_samples={num_samples}, "
                f"epochs={epochs}, batch_size={batch_size}, generation_batch_size={generation_batch_size}."
            )
        super().__init__()
        self.num_samples = num_samples
        self.epochs = epochs
        self.batch_size = batch_size
        self.generation_batch_size = generation_batch_size
        self.seed = seed
        self.results: list[dict[str, float | int | str]] = []
        self._last_round = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        require_domain_data(trainer, type(self).__name__)

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        self._last_round = round.index

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        started = time.perf_counter()
        self.results = evaluate_utility(
            pl_module,
            trainer.datamodule,
            self.num_samples,
            self.epochs,
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
            self.num_samples,
            self.epochs,
            format_utility_table(self.results),
        )
