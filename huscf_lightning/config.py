"""Typed sections of the run configuration (LightningCLI reads them from YAML and the command line).

The plan section's `PlanSpec` lives with the split (`split.plan`), which reads it, and the privacy section's
`PrivacySpec` with the defences (`privacy.spec`); they are importable from here as every section is."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from huscf_lightning.errors import ConfigError
from huscf_lightning.federation.strategy import strategy_class
from huscf_lightning.privacy.spec import PrivacySpec
from huscf_lightning.split.plan import PLAN_SOURCES, PlanSpec

__all__ = ["PLAN_SOURCES", "EvaluationSpec", "FederationSpec", "PlanSpec", "PrivacySpec", "check_optimiser_settings"]

EVALUATION_METRICS = ("score", "fid", "kid")


@dataclass
class FederationSpec:
    """How client copies are averaged at every round end.

    ``mode``: the federation strategy (`huscf_lightning.federation.strategy`): ``fedavg`` (size weights,
    one group), ``clustered`` (size weights inside k-means clusters), ``kld_clustered`` (KLD weights
    inside clusters; the method's default), or the class path of your own `FederationStrategy`.
    ``k``: number of clusters, an int or ``auto`` (silhouette over ``k_range``); ``None`` means the
    number of domains. ``alpha``: KLD temperature. ``warmup_rounds``: rounds of plain FedAvg first.
    ``participation``: the clients that train in a round, drawn per round from the seed: a fraction in
    (0, 1] of them (1.0, every client, is the paper's), or a whole number > 1 of clients.
    """

    mode: str = "kld_clustered"
    k: int | str | None = None
    k_range: list[int] = field(default_factory=lambda: [2, 8])
    alpha: float = 1.0
    warmup_rounds: int = 2
    participation: float = 1.0

    def validate(self) -> None:
        """Raise a `ConfigError` naming the fix (LightningCLI already checks the Literal types)."""
        strategy_class(self.mode)
        if isinstance(self.k, str) and self.k != "auto":
            raise ConfigError(f"federation.k must be an integer, 'auto' or null (number of domains); got {self.k!r}.")
        if isinstance(self.k, int) and self.k < 1:
            raise ConfigError(f"federation.k must be >= 1 (or 'auto', or null for the number of domains); got {self.k}.")
        low_high = list(self.k_range)
        if len(low_high) != 2 or not 2 <= low_high[0] <= low_high[1]:
            raise ConfigError(
                f"federation.k_range must be [low, high] with 2 <= low <= high (k: auto tries each); got {self.k_range}."
            )
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise ConfigError(
                f"federation.alpha (the KLD temperature) must be a finite number >= 0; got {self.alpha} "
                "(0 gives size weights inside clusters, the default 1 is the paper's)."
            )
        if self.warmup_rounds < 0:
            raise ConfigError(f"federation.warmup_rounds must be >= 0; got {self.warmup_rounds}.")
        share = self.participation
        if not (math.isfinite(share) and (0 < share <= 1 or (share > 1 and float(share).is_integer()))):
            raise ConfigError(
                f"federation.participation must be a fraction in (0, 1] of the clients (1.0: all of them, the "
                f"paper's), or a whole number > 1 of clients per round; got {share}."
            )


@dataclass
class EvaluationSpec:
    """What is measured during and after training.

    ``metrics``: per-round metrics per domain among ``score`` (generation score), ``fid``, ``kid``.
    ``every_n_rounds``/``num_samples``: how often and on how many generated samples.
    ``utility_samples``/``utility_epochs``: the end-of-training utility test (0 samples turns it off).
    ``inception_weights``: a local Inception weights file for FID/KID (else classifier features).
    ``sample_grids``: log a PNG grid per domain per round.
    """

    metrics: list[str] = field(default_factory=lambda: ["score"])
    every_n_rounds: int = 1
    num_samples: int = 5000
    utility_samples: int = 30000
    utility_epochs: int = 15
    inception_weights: str | None = None
    sample_grids: bool = True
    classifier_cache: str = ".huscf_cache/classifiers"

    def validate(self) -> None:
        """Raise a `ConfigError` naming the fix for an unknown metric or an impossible count."""
        unknown = sorted(set(self.metrics) - set(EVALUATION_METRICS))
        if unknown:
            raise ConfigError(
                f"Unknown evaluation metric(s) {unknown}; model.evaluation.metrics takes any of "
                f"{list(EVALUATION_METRICS)} (or [] to turn per-round evaluation off)."
            )
        if self.inception_weights is not None and not Path(self.inception_weights).expanduser().is_file():
            raise ConfigError(
                f"model.evaluation.inception_weights {self.inception_weights!r} is not a file. Give the path of a local "
                "Inception weights file for FID/KID, or leave it null to use the domain classifiers' features."
            )
        if self.every_n_rounds < 1 or self.num_samples < 2 or self.utility_samples < 0 or self.utility_epochs < 1:
            raise ConfigError(
                "model.evaluation needs every_n_rounds >= 1, num_samples >= 2, utility_samples >= 0 (0 = off) and "
                f"utility_epochs >= 1; got {self.every_n_rounds}, {self.num_samples}, {self.utility_samples}, "
                f"{self.utility_epochs}."
            )


def check_optimiser_settings(lr_g: float, lr_d: float, betas: object) -> None:
    """Raise a `ConfigError` for learning rates or Adam betas that torch would reject only once training starts."""
    for name, value in (("lr_g", lr_g), ("lr_d", lr_d)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(
                f"model.{name} is {value}, but a learning rate must be a finite number > 0; set e.g. "
                f"--model.{name}=2e-4 (the paper's value)."
            )
    pair = list(betas) if isinstance(betas, (list, tuple)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in pair):
        raise ConfigError(
            f"model.betas is {pair if pair is not None else betas}, but Adam's betas are two numbers in [0, 1); set e.g. "
            "--model.betas=[0.5,0.999] (the paper's values)."
        )
