"""Checking a comparison before any cell runs: every cell's fit config through the fit parser, one
budget and evaluation protocol for all cells, every method able to run every scenario, an MLflow logger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from huscf_lightning.compare.spec import Cell, CompareError, CompareSpec, Scenario
from huscf_lightning.config import FederationSpec, PrivacySpec
from huscf_lightning.errors import ConfigError
from huscf_lightning.federation.strategy import build_strategy
from huscf_lightning.privacy.attacks.record import attack_settings
from huscf_lightning.sweep import FitConfig
from huscf_lightning.sweep.fit_config import mlflow_destination

# Keys every cell must share: the training budget and the evaluation protocol (sizes, metrics, features).
BUDGET_KEYS = ("model.rounds", "model.local_epochs", "data.batch_size", "data.cap", "model.evaluation")
TABLE_EVALUATION_METRICS = ("score", "fid")  # turned on in every cell when the configs leave them out
LOGGER = "trainer.logger"


@dataclass(frozen=True)
class PreparedComparison:
    """A spec checked against the fit parser: each cell's fit overrides, each scenario's domains, where
    the cells log, and the FID row's label (which features it uses)."""

    fit: FitConfig
    overrides: dict[Cell, dict[str, Any]]
    fingerprints: dict[Cell, str]
    domains: dict[str, list[str]]
    tracking_uri: str
    experiment_name: str
    labels: dict[str, str]

    def arguments(self, cell: Cell, run_id: str) -> list[str]:
        """The ``fit`` command line of one cell, logging into the MLflow run ``run_id``."""
        logger = {"tracking_uri": self.tracking_uri, "experiment_name": self.experiment_name, "run_id": run_id}
        overrides = {**self.overrides[cell], **{f"{LOGGER}.init_args.{k}": v for k, v in logger.items()}}
        return ["fit", *self.fit.base_args, *self.fit.arguments(overrides)]


def _plain(value: Any) -> Any:
    """A parsed config value comparable with ``==`` (a jsonargparse Namespace as a dict)."""
    return value.as_dict() if hasattr(value, "as_dict") else value


def _forbidden(paths: list[str], owner: str, allowed_data: bool) -> None:
    """A method may set neither the seed nor the data; nobody sets the logger (the comparison does)."""
    def refused(path: str) -> bool:
        data = path == "data" or path.startswith("data.")
        if data and allowed_data:
            return path in ("data", "data.domains", "data.seed", "data.scenario")
        return path == "seed_everything" or path.startswith(LOGGER) or data
    bad = [p for p in paths if refused(p)]
    if bad:
        raise CompareError(
            f"{owner} sets {bad}, which the comparison owns: seeds come from seeds:, the data from scenarios:, the MLflow "
            f"logger from tracking_uri:/experiment_name:" + ("" if allowed_data else ", and a method may not change the data "
            "(put batch_size or cap in fixed: so every cell shares them)") + ". Remove those keys."
        )


def _scenario_file(scenario: Scenario, folder: Path) -> str:
    """The scenario as a fit config file holding only ``data:``; an inline one is written into ``folder``."""
    if scenario.config is None:
        path = folder / f"{scenario.name}.yaml"
        path.write_text(yaml.safe_dump({"data": {"scenario": scenario.name, **dict(scenario.data or {})}}))
        return str(path)
    content = yaml.safe_load(Path(scenario.config).read_text()) or {}
    if not isinstance(content, Mapping) or set(content) != {"data"}:
        keys = sorted(content) if isinstance(content, Mapping) else content
        raise CompareError(
            f"Scenario {scenario.name!r} ({scenario.config}) must hold only a data: section, but it holds {keys}. Move "
            f"training and evaluation settings to the spec's base_config or fixed:, so every method runs them alike."
        )
    return scenario.config


def fingerprint(config: Any) -> str:
    """A short hash of a cell's resolved fit config without its logger: a finished cell is reused only
    when the spec still asks for exactly that fit."""
    settings = {k: _plain(v) for k, v in config.as_dict().items() if k not in ("trainer", "config")}
    settings["trainer"] = {k: v for k, v in _plain(config["trainer"]).items() if k != "logger"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def method_problem(config: Any) -> str | None:
    """Why a resolved fit config cannot run (its method on its clients), or None when it can: the method's
    federation strategy checks the clients, as the fit does before it trains."""
    clients = sum(int(d.clients) for d in config["data.domains"])
    spec = FederationSpec(
        mode=config["model.federation.mode"],
        k=config["model.federation.k"],
        k_range=list(config["model.federation.k_range"]),
        alpha=config["model.federation.alpha"],
        warmup_rounds=config["model.federation.warmup_rounds"],
    )
    privacy = PrivacySpec(**_plain(config["model.privacy"])) if config.get("model.privacy") else PrivacySpec()
    try:
        strategy = build_strategy(spec)
        strategy.check_clients(clients)
        privacy.validate()
        privacy.check_method(strategy)
    except ConfigError as err:
        return str(err).rstrip(".")
    if strategy.needs_clusters and spec.k == "auto" and clients < 3:
        return f"k: auto compares silhouette scores, which needs at least 3 clients; the scenario has {clients}"
    return None


def prepare(spec: CompareSpec, scenario_folder: Path) -> PreparedComparison:
    """Check the whole comparison before any cell runs (inline scenarios are written into ``scenario_folder``)."""
    if spec.privacy_attacks is not None:
        attack_settings(spec.privacy_attacks)  # the attacks' settings, checked before the first cell trains
    fit = FitConfig(spec.base_config)
    fit.check_paths(list(spec.fixed), "The comparison's fixed:")
    _forbidden(list(spec.fixed), "The comparison's fixed:", allowed_data=True)
    for method in spec.methods:
        fit.check_paths(list(method.overrides), f"Method {method.name!r}")
        _forbidden(list(method.overrides), f"Method {method.name!r}", allowed_data=False)
    fixed = dict(spec.fixed)
    config = fit.parse(fixed, "The comparison's fixed:")
    metrics = list(config["model.evaluation.metrics"] or [])
    if any(m not in metrics for m in TABLE_EVALUATION_METRICS):
        fixed["model.evaluation.metrics"] = [*metrics, *(m for m in TABLE_EVALUATION_METRICS if m not in metrics)]
    uri, experiment = mlflow_destination(
        config, spec.tracking_uri, spec.experiment_name, "A comparison records every cell", CompareError
    )

    files = {s.name: _scenario_file(s, scenario_folder) for s in spec.scenarios}
    overrides: dict[Cell, dict[str, Any]] = {}
    fingerprints: dict[Cell, str] = {}
    domains: dict[str, list[str]] = {}
    budgets: dict[str, dict[Any, list[str]]] = {key: {} for key in BUDGET_KEYS}
    inception = None
    for scenario in spec.scenarios:
        for method in spec.methods:
            where = f"Method {method.name!r} on scenario {scenario.name!r}"
            cell_overrides = {"config": files[scenario.name], **fixed, **method.overrides}
            resolved = fit.parse({**cell_overrides, "seed_everything": spec.seeds[0]}, where)
            problem = method_problem(resolved)
            if problem:
                raise CompareError(
                    f"{where} cannot run: {problem}. Give the scenario more clients, or leave this method out of the "
                    f"comparison for it (one spec per set of scenarios it can run)."
                )
            domains[scenario.name] = [d.name for d in resolved["data.domains"]]
            for key in BUDGET_KEYS:
                budgets[key].setdefault(repr(_plain(resolved[key])), []).append(f"{method.name} x {scenario.name}")
            inception = resolved["model.evaluation.inception_weights"]
            for seed in spec.seeds:
                cell = Cell(method.name, scenario.name, seed)
                overrides[cell] = {**cell_overrides, "seed_everything": seed}
                fingerprints[cell] = fingerprint(resolved if seed == spec.seeds[0] else fit.parse(overrides[cell], where))
    for key, values in budgets.items():
        if len(values) > 1:
            seen = "; ".join(f"{value} in {', '.join(cells)}" for value, cells in values.items())
            raise CompareError(
                f"The budget differs between cells: {key} is {seen}. Every cell of a comparison trains and is evaluated "
                f"alike: set {key} once in the spec's fixed: (or base_config) and remove it from the methods' overrides "
                f"and the scenario files."
            )
    features = "Inception features" if inception else "classifier features"
    return PreparedComparison(fit, overrides, fingerprints, domains, uri, experiment, {"fid": f"FID ({features})"})
