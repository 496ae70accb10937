"""Checking a whole spec before any trial runs, and what the trials then need from the fit config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import SweepError
from .fit_config import FitConfig, mlflow_destination
from .spec import EVAL_OBJECTIVES, SweepSpec


@dataclass(frozen=True)
class PreparedSweep:
    """A spec checked against the fit parser: the parser, the fixed overrides (plus the metrics the
    objectives need), where the trials log, and how often rounds are evaluated."""

    fit: FitConfig
    fixed: dict[str, Any]
    tracking_uri: str
    experiment_name: str
    every_n_rounds: int


def prepare(spec: SweepSpec) -> PreparedSweep:
    """Check the whole spec before any trial: every key, every fixed value and the search space's
    extremes (both ends of each range, every choice) through the fit parser, and the MLflow logger."""
    fit = FitConfig(spec.base_config)
    fit.check_paths(list(spec.fixed), "fixed")
    fit.check_paths([p.path for p in spec.search_space], "search_space")
    fixed = dict(spec.fixed)
    config = fit.parse(fixed, "fixed")
    needed = [o for o in spec.objectives if o in EVAL_OBJECTIVES]
    metrics = list(config["model.evaluation.metrics"] or [])
    if any(o not in metrics for o in needed):
        fixed["model.evaluation.metrics"] = [*metrics, *(o for o in needed if o not in metrics)]
    extremes = {p.path: p.extremes() for p in spec.search_space}
    for i in range(max(map(len, extremes.values()), default=0)):
        point = {path: values[i % len(values)] for path, values in extremes.items()}
        fit.parse({**fixed, **point}, "search_space")
    uri, experiment = mlflow_destination(
        config, spec.tracking_uri, spec.experiment_name, "Sweeps record every trial", SweepError
    )
    return PreparedSweep(fit, fixed, uri, experiment, int(config["model.evaluation.every_n_rounds"]))
