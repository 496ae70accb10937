"""Optuna sweeps over fit configurations, every trial a nested MLflow run under one sweep run.

A sweep spec (YAML, see ``sweeps/``) names a study, its objectives (``fid``, ``score``,
``latency``), fixed fit overrides and a search space over dotted fit config keys. Every path is
checked against the real fit parser before any trial runs. Two or more objectives use NSGA-II;
one objective uses TPE, with pruning on the per-round evaluation when it is ``score`` or ``fid``.
A failed trial is recorded as failed (in Optuna and MLflow) and the study goes on; at the end the
Pareto front is logged to the sweep's parent run as JSON and PNG. Studies resume by name.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import optuna
import yaml
from jsonargparse import Namespace
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import PyTorchLightningPruningCallback

from huscf_lightning.errors import HuSCFError
from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.cli import DEFAULT_CONFIG, HuSCFCLI, config_keys, run_cli
from huscf_lightning.data import HuSCFDataModule
from huscf_lightning.module import HuSCFGAN
from huscf_lightning.rounds import RoundState
from huscf_lightning.split.ga import GaSettings
from huscf_lightning.tracking import check_tracking_uri

log = logging.getLogger(__name__)

# Objective -> Optuna direction. fid and score are means over domains of the last per-round value.
OBJECTIVE_DIRECTIONS = {"fid": "minimize", "score": "maximize", "latency": "minimize"}
PARAMETER_KINDS = ("int", "float", "categorical")
SPEC_KEYS = (
    "study_name", "storage", "objectives", "n_trials", "base_config", "fixed", "search_space",
    "seed", "sampler", "pruner", "tracking_uri", "experiment_name",
)
# Fit config keys that hold a free-form dict, with the settings class that defines (and checks) its sub-keys.
DICT_SETTINGS: dict[str, type] = {"model.plan.ga": GaSettings}
LOGGER_ARGS = "trainer.logger.init_args"


class SweepError(HuSCFError, ValueError):
    """A sweep that cannot run as specified; the message names the problem and the fix."""


class TrialError(HuSCFError, RuntimeError):
    """One trial could not produce its objective values; the study records it as failed and goes on."""


# ----------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Parameter:
    """One searched fit config key: an int or float range, or categorical choices.

    ``when`` makes it conditional: ``{model.plan.source: ga}`` samples it only in trials where that
    key (fixed, or another searched parameter, which is then sampled first) has that value (or one
    of a list of values), so a trial's params hold only what it used.
    """

    path: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()
    when: tuple[tuple[str, tuple], ...] = ()

    @classmethod
    def from_mapping(cls, path: str, entry: object) -> Parameter:
        where = f"search_space[{path!r}]"
        if not isinstance(entry, Mapping) or entry.get("type") not in PARAMETER_KINDS:
            raise SweepError(
                f"{where} must be a mapping with type one of {list(PARAMETER_KINDS)}, e.g. "
                f"{{type: int, low: 1, high: 4}} or {{type: categorical, choices: [random, ga]}}; got {entry!r}."
            )
        kind = entry["type"]
        allowed = {"type", "choices", "when"} if kind == "categorical" else {"type", "low", "high", "step", "log", "when"}
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise SweepError(f"{where} has unknown key(s) {unknown}; a {kind} parameter takes {sorted(allowed)}.")
        when = _conditions(entry.get("when") or {}, where)
        if kind == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices:
                raise SweepError(f"{where} needs a non-empty list of choices.")
            bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
            if bad:
                raise SweepError(
                    f"{where} has choices {bad} that are not scalars; Optuna stores only null, bool, int, float "
                    f"or str choices. Write list or dict values as YAML text, e.g. \"[1, 1, 2, 2]\"."
                )
            return cls(path, kind, choices=tuple(choices), when=when)
        if "low" not in entry or "high" not in entry or not entry["low"] <= entry["high"]:
            raise SweepError(
                f"{where} needs numbers low <= high; got low={entry.get('low')!r}, high={entry.get('high')!r}."
            )
        number = int if kind == "int" else float
        if kind == "int" and not all(isinstance(entry[k], int) for k in ("low", "high")):
            raise SweepError(
                f"{where} is an int range, so low and high must be integers; got {entry['low']!r}, {entry['high']!r}."
            )
        if entry.get("log") and entry["low"] <= 0:
            raise SweepError(f"{where} has log: true, which needs low > 0; got low={entry['low']!r}.")
        if entry.get("log") and entry.get("step") is not None:
            raise SweepError(f"{where} sets both log: true and a step; Optuna samples a log range without steps.")
        step = None if entry.get("step") is None else number(entry["step"])
        return cls(path, kind, number(entry["low"]), number(entry["high"]), step, bool(entry.get("log", False)), when=when)

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether a trial with these fixed and already sampled values samples this parameter."""
        return all(path in values and values[path] in allowed for path, allowed in self.when)

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value for this key."""
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(self.path, list(self.choices))

    def extremes(self) -> list[Any]:
        """The values checked against the fit parser before the sweep: both ends, or every choice."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            entry = {"type": self.kind, "choices": list(self.choices)}
        else:
            entry = {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}
            entry = entry if self.step is None else {**entry, "step": self.step}
        return {**entry, "when": {path: list(allowed) for path, allowed in self.when}} if self.when else entry


def _sampling_order(space: Sequence[Parameter], fixed: Mapping[str, Any]) -> tuple[Parameter, ...]:
    """The parameters in an order where every ``when:`` key is fixed or sampled before it; checks the conditions."""
    searched = {p.path: p for p in space}
    for parameter in space:
        where = f"search_space[{parameter.path!r}] has when:"
        unknown = [path for path, _ in parameter.when if path not in fixed and path not in searched]
        if unknown or parameter.path in dict(parameter.when):
            raise SweepError(
                f"{where} on {unknown or [parameter.path]}; condition only on fixed keys or on other searched parameters."
            )
        for path, allowed in parameter.when:
            source = searched.get(path)
            never = [v for v in allowed if source is not None and source.kind == "categorical" and v not in source.choices]
            if never:
                raise SweepError(f"{where} {path} in {never}, which is not among its choices {list(source.choices)}.")
    ordered: list[Parameter] = []
    known = set(fixed)  # keys whose value a trial knows before sampling the next parameter
    waiting = list(space)
    while waiting:
        ready = [p for p in waiting if all(path in known for path, _ in p.when)]
        if not ready:
            raise SweepError(f"The when: conditions of {[p.path for p in waiting]} depend on each other in a circle.")
        ordered.extend(ready)
        known.update(p.path for p in ready)
        waiting = [p for p in waiting if p not in ready]
    return tuple(ordered)


def _conditions(when: object, where: str) -> tuple[tuple[str, tuple], ...]:
    """``when:`` as (key, allowed values) pairs; a single value allows just itself."""
    if not isinstance(when, Mapping):
        raise SweepError(f"{where}: when must map fit keys to a value or a list of values, e.g. {{model.plan.source: ga}}.")
    return tuple((str(path), tuple(v if isinstance(v, list) else [v])) for path, v in when.items())


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep: the study, its objectives, fixed fit overrides and the search space.

    ``base_config`` is a fit config layered on the packaged default; ``fixed`` and the searched
    keys are dotted fit config keys (``model.federation.k``) layered on top. ``sampler`` holds
    keyword arguments of Optuna's NSGAIISampler/TPESampler; ``pruner`` those of the Optuna pruner
    its ``type`` names (MedianPruner by default).
    ``tracking_uri``/``experiment_name`` default to the fit config's MLFlowLogger settings.
    """

    study_name: str
    search_space: tuple[Parameter, ...] = ()
    objectives: tuple[str, ...] = ("fid", "latency")
    storage: str = "sqlite:///optuna.db"
    n_trials: int = 20
    base_config: str | None = None
    fixed: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    sampler: Mapping[str, Any] = field(default_factory=dict)
    pruner: Mapping[str, Any] = field(default_factory=dict)
    tracking_uri: str | None = None
    experiment_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.study_name, str) or not self.study_name:
            raise SweepError("A sweep needs a study_name (the name Optuna resumes it by).")
        unknown = [o for o in self.objectives if o not in OBJECTIVE_DIRECTIONS]
        if not self.objectives or unknown or len(set(self.objectives)) != len(self.objectives):
            raise SweepError(
                f"objectives must be distinct names among {list(OBJECTIVE_DIRECTIONS)}; got {list(self.objectives)}."
            )
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise SweepError(f"n_trials must be a positive integer; got {self.n_trials!r}.")
        both = sorted(set(self.fixed) & {p.path for p in self.search_space})
        if both:
            raise SweepError(f"{both} are both fixed and searched; keep each key in one of fixed or search_space.")
        object.__setattr__(self, "search_space", _sampling_order(self.search_space, self.fixed))
        self.make_sampler()
        self.make_pruner()

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVE_DIRECTIONS[o] for o in self.objectives]

    @property
    def pruning_monitor(self) -> str | None:
        """The per-round metric a single-objective sweep prunes on (None: no pruning)."""
        if len(self.objectives) == 1 and self.objectives[0] in ("fid", "score"):
            return f"eval/{self.objectives[0]}_mean"
        return None

    def make_sampler(self, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
        """NSGA-II for several objectives, TPE for one; seeded (plus an offset so a resumed study samples anew)."""
        sampler = optuna.samplers.NSGAIISampler if len(self.objectives) > 1 else optuna.samplers.TPESampler
        try:
            return sampler(**self.sampler, seed=self.seed + seed_offset)
        except TypeError as err:
            raise SweepError(f"sampler settings {dict(self.sampler)} do not fit {sampler.__name__}: {err}.") from err

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """Pruning on the per-round metric (single objective only): ``pruner.type`` names an Optuna pruner
        (default MedianPruner, from round 2 on after 2 trials); the other keys are its arguments."""
        if self.pruning_monitor is None:
            if self.pruner:
                raise SweepError("pruner settings apply only to a single fid or score objective; remove them.")
            return optuna.pruners.NopPruner()
        settings = dict(self.pruner)
        name = settings.pop("type", "MedianPruner")
        pruner = getattr(optuna.pruners, str(name), None)
        if not (isinstance(pruner, type) and issubclass(pruner, optuna.pruners.BasePruner)):
            known = [n for n in dir(optuna.pruners) if n.endswith("Pruner") and n != "BasePruner"]
            raise SweepError(f"pruner type {name!r} is not an Optuna pruner; choose one of {known}.")
        if pruner is optuna.pruners.MedianPruner:
            settings = {"n_startup_trials": 2, "n_warmup_steps": 2, **settings}
        try:
            return pruner(**settings)
        except (TypeError, ValueError) as err:
            raise SweepError(f"pruner settings {dict(self.pruner)} do not fit {pruner.__name__}: {err}.") from err

    def to_dict(self) -> dict:
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "objectives": list(self.objectives),
            "n_trials": self.n_trials,
            "base_config": self.base_config,
            "fixed": dict(self.fixed),
            "search_space": {p.path: p.to_dict() for p in self.search_space},
            "seed": self.seed,
            "sampler": dict(self.sampler),
            "pruner": dict(self.pruner),
            "tracking_uri": self.tracking_uri,
            "experiment_name": self.experiment_name,
        }


def sweep_from_mapping(data: object, where: str = "sweep spec", folder: Path | None = None) -> SweepSpec:
    """A `SweepSpec` from parsed YAML; ``base_config`` is taken relative to ``folder`` (the spec's)."""
    if not isinstance(data, Mapping):
        raise SweepError(f"{where} must be a YAML mapping with keys among {list(SPEC_KEYS)}.")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        hints = {k: difflib.get_close_matches(k, SPEC_KEYS, n=1) for k in unknown}
        raise SweepError(f"{where} has unknown key(s) {unknown} (close: {hints}); the keys are {list(SPEC_KEYS)}.")
    values = dict(data)
    for key in ("fixed", "search_space", "sampler", "pruner"):
        if not isinstance(values.get(key) or {}, Mapping):
            raise SweepError(f"{where}: {key} must be a mapping; got {values[key]!r}.")
    searched = values.pop("search_space", None) or {}
    space = tuple(Parameter.from_mapping(path, entry) for path, entry in searched.items())
    for key in ("fixed", "sampler", "pruner"):
        values[key] = dict(values.get(key) or {})
    if isinstance(values.get("objectives"), str):
        values["objectives"] = [values["objectives"]]
    values["objectives"] = tuple(values.get("objectives", SweepSpec.objectives))
    base = values.get("base_config")
    if base is not None:
        path = Path(base) if folder is None or Path(base).is_absolute() else folder / base
        if not path.is_file():
            raise SweepError(
                f"{where}: base_config {str(path)!r} is not a file (a relative path is taken from the spec's folder)."
            )
        values["base_config"] = str(path)
    return SweepSpec(search_space=space, **values)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read a sweep spec YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"No sweep spec at {str(path)!r}; give a YAML file such as sweeps/cuts_and_clusters.yaml.")
    return sweep_from_mapping(yaml.safe_load(path.read_text()), str(path), path.parent)


# ------------------------------------------------------------------- checking against the fit parser
class _ConfigOnlyCLI(HuSCFCLI):
    """The fit CLI stopped after parsing: no model, data or trainer is built."""

    def instantiate_classes(self) -> None:
        """Nothing to build: the sweep only checks keys and values."""


def format_value(value: Any) -> str:
    """A command-line value: strings as written (YAML text such as ``[1, 2]`` stays parseable), others as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


class FitConfig:
    """The fit parser with the sweep's base config: knows every valid key and parses overrides."""

    def __init__(self, base_config: str | None) -> None:
        self.base_args = ["--config", base_config] if base_config else []
        try:
            cli = _ConfigOnlyCLI(
                HuSCFGAN,
                HuSCFDataModule,
                args=self.base_args,
                run=False,
                parser_kwargs={
                    "default_config_files": [DEFAULT_CONFIG],
                    "parser_mode": "omegaconf",
                    "exit_on_error": False,  # a rejected value raises, so the sweep can name it
                },
                auto_configure_optimizers=False,
            )
        except argparse.ArgumentError as err:
            raise SweepError(f"The sweep's base_config {base_config!r} is not a valid fit config: {err}") from err
        self.parser = cli.parser
        self.base = cli.config

    def known_paths(self) -> list[str]:
        """Every settable dotted key: the parser's keys, their parent groups, and the sub-keys of dict settings."""
        subkeys = [f"{key}.{f.name}" for key, settings in DICT_SETTINGS.items() for f in fields(settings)]
        return sorted({*config_keys(self.base), *subkeys})

    def check_paths(self, paths: Sequence[str], where: str) -> None:
        """Raise a `SweepError` naming each unknown key and its close matches."""
        known = self.known_paths()
        unknown = [p for p in paths if p not in known]
        if unknown:
            close = {p: difflib.get_close_matches(p, known, n=3, cutoff=0.6) or "none" for p in unknown}
            hints = "; ".join(f"{p!r} (close: {matches})" for p, matches in close.items())
            raise SweepError(
                f"{where} names fit config key(s) that do not exist: {hints}. Use dotted fit keys as in "
                f"`python -m huscf_lightning fit --print_config` (e.g. model.federation.k)."
            )

    def arguments(self, overrides: Mapping[str, Any]) -> list[str]:
        """Command-line overrides; sub-keys of dict settings are merged into one value with the config's."""
        merged = dict(overrides)
        for key in DICT_SETTINGS:
            subkeys = {p[len(key) + 1:]: merged.pop(p) for p in list(merged) if p.startswith(f"{key}.")}
            if subkeys:
                value = dict(merged.pop(key, None) or self.base.get(key) or {})
                merged[key] = {**value, **subkeys}
        return [f"--{path}={format_value(value)}" for path, value in merged.items()]

    def parse(self, overrides: Mapping[str, Any], where: str) -> Namespace:
        """The resolved config with these overrides; a clear error when the fit parser rejects a value."""
        try:
            config = self.parser.parse_args([*self.base_args, *self.arguments(overrides)])
        except argparse.ArgumentError as err:
            raise SweepError(f"{where}: the fit parser rejects {dict(overrides)}: {err}") from err
        for key, settings in DICT_SETTINGS.items():
            try:
                settings.from_mapping(config[key])
            except ValueError as err:
                raise SweepError(f"{where}: {key} would be {config[key]}, which is invalid: {err}") from err
        return config


# ----------------------------------------------------------------------------------- tracking
def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "active":
            return experiment.experiment_id
        return client.create_experiment(name)
    except Exception as err:  # any store failure (bad path, refused connection, auth): one clear message
        raise SweepError(
            f"Cannot open experiment {name!r} in the MLflow store {uri} ({type(err).__name__}: {err}). Check the "
            f"tracking URI (e.g. sqlite:///mlflow.db in an existing folder, or a running server)."
        ) from err


def _parent_run(client: MlflowClient, experiment_id: str, study: optuna.Study, spec: SweepSpec) -> str:
    """The sweep's MLflow run: the one this study used before when it is in this store, else a new one."""
    previous = study.user_attrs.get("mlflow_parent_run_id")
    if previous:
        try:
            run = client.get_run(previous)
        except MlflowException:
            run = None
        if run is not None and run.info.experiment_id == experiment_id:
            client.update_run(previous, status="RUNNING")
            log.info("resuming sweep run %s", previous)
            return previous
    run = client.create_run(
        experiment_id,
        run_name=f"sweep-{spec.study_name}",
        tags={
            "sweep.study": spec.study_name,
            "sweep.storage": spec.storage,
            "sweep.objectives": ",".join(spec.objectives),
        },
    )
    study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
    return run.info.run_id


# ------------------------------------------------------------------------------------ pruning
class RoundPruning(RoundCallback, PyTorchLightningPruningCallback):
    """Optuna pruning at round ends (HuSCFGAN has no validation loop), reported with step = round.

    A round callback of the last stage, so the round's evaluation has run when it reads the metric.
    """

    def __init__(self, trial: optuna.Trial, monitor: str, every_n_rounds: int = 1) -> None:
        PyTorchLightningPruningCallback.__init__(self, trial, monitor)
        RoundCallback.__init__(self, every_n_rounds)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        if self.is_ddp_backend:
            raise SweepError("Pruning sweeps run each trial in one process; set trainer.devices=1 (or drop pruning).")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Rounds are reported at their end instead (there is no validation loop)."""

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        value = round.metrics.get(self.monitor, trainer.callback_metrics.get(self.monitor))
        if value is None:
            raise TrialError(
                f"Pruning monitors {self.monitor!r}, which the run did not log; enable it in model.evaluation.metrics."
            )
        self._trial.report(float(value), step=round.index)
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"Trial pruned at round {round.index} ({self.monitor} = {float(value):.4f}).")


# ------------------------------------------------------------------------------------- trials
def _now_ms() -> int:
    return int(time.time() * 1000)


def objective_values(objectives: Sequence[str], metrics: Mapping[str, float], model: HuSCFGAN) -> dict[str, float]:
    """Each objective of a finished trial: the mean over domains of the final eval metric, or the plan's latency."""
    values = {}
    for name in objectives:
        if name == "latency":
            values[name] = model.plan_report["latency_s"]
            continue
        keys = [f"eval/{name}/{domain}" for domain in model.domain_names]
        missing = [k for k in keys if k not in metrics]
        if missing:
            raise TrialError(
                f"The trial logged no {missing}; the {name} objective needs {name!r} in model.evaluation.metrics."
            )
        values[name] = sum(metrics[k] for k in keys) / len(keys)
    return values


@dataclass
class _Trials:
    """The objective Optuna calls: one fit run per trial, recorded as a child of the sweep run."""

    spec: SweepSpec
    prepared: PreparedSweep
    client: MlflowClient
    experiment_id: str
    parent_run_id: str

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        sampled: dict[str, Any] = {}
        for parameter in self.spec.search_space:
            if parameter.applies({**self.spec.fixed, **sampled}):
                sampled[parameter.path] = parameter.suggest(trial)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.spec.study_name}-trial-{trial.number}",
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                "sweep.study": self.spec.study_name,
                "sweep.trial": str(trial.number),
            },
        )
        run_id = run.info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        if sampled:
            self.client.log_batch(run_id, params=[Param(k, format_value(v)) for k, v in sampled.items()])
        prepared = self.prepared
        logger = {"tracking_uri": prepared.tracking_uri, "experiment_name": prepared.experiment_name, "run_id": run_id}
        overrides = {**prepared.fixed, **sampled, **{f"{LOGGER_ARGS}.{k}": v for k, v in logger.items()}}
        args = prepared.fit.arguments(overrides)
        monitor = self.spec.pruning_monitor
        callbacks = [RoundPruning(trial, monitor, prepared.every_n_rounds)] if monitor else []
        try:
            values = self._fit(args, run_id, callbacks)
        except optuna.TrialPruned:
            self._end(run_id, RunStatus.KILLED, "PRUNED")
            raise
        except BaseException as err:
            error = f"{type(err).__name__}: {err}"
            trial.set_user_attr("error", error[:2000])
            self._end(run_id, RunStatus.FAILED, "FAIL", error)
            raise
        self.client.log_batch(run_id, metrics=[Metric(f"objective/{k}", v, _now_ms(), 0) for k, v in values.items()])
        self._end(run_id, RunStatus.FINISHED, "COMPLETE")
        result = tuple(values[o] for o in self.spec.objectives)
        return result if len(result) > 1 else result[0]

    def _fit(self, args: list[str], run_id: str, callbacks: list[pl.Callback]) -> dict[str, float]:
        try:
            cli = run_cli(["fit", *self.prepared.fit.base_args, *args], extra_callbacks=callbacks)
        except SystemExit as exit_:  # the fit parser exits on a value it rejects: a failed trial, not the sweep's end
            raise TrialError(f"The fit command rejected the trial's arguments (exit {exit_.code}): {args}") from exit_
        metrics = self.client.get_run(run_id).data.metrics
        return objective_values(self.spec.objectives, metrics, cli.model)

    def _end(self, run_id: str, status: int, state: str, error: str | None = None) -> None:
        self.client.set_tag(run_id, "sweep.state", state)
        if error is not None:
            self.client.set_tag(run_id, "sweep.error", error[:5000])
        self.client.set_terminated(run_id, RunStatus.to_string(status))


# -------------------------------------------------------------------------------- the front
def front_rows(study: optuna.Study, objectives: Sequence[str]) -> list[dict]:
    """The Pareto front (the best trial for one objective): trial, objective values, params, MLflow run."""
    return [
        {
            "trial": t.number,
            **dict(zip(objectives, t.values)),
            "params": t.params,
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
        }
        for t in sorted(study.best_trials, key=lambda t: t.number)
    ]


def format_front(rows: Sequence[Mapping], objectives: Sequence[str]) -> str:
    """The front as a plain-text table, one row per trial."""
    if not rows:
        return "No completed trials: the Pareto front is empty."
    header = f"{'trial':>5}  " + "".join(f"{o:>12}" for o in objectives) + "  params"
    lines = [header]
    for row in rows:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["params"].items())
        lines.append(f"{row['trial']:>5}  " + "".join(f"{row[o]:>12.4f}" for o in objectives) + f"  {params}")
    return "\n".join(lines)


def front_figure(study: optuna.Study, objectives: Sequence[str]) -> Figure:
    """Completed trials and the front: the first two objectives against each other, or one objective per trial."""
    figure = Figure(figsize=(5.5, 4.0))
    axes = figure.subplots()
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = sorted(study.best_trials, key=lambda t: t.values[0])
    if len(objectives) == 1:
        axes.plot([t.number for t in done], [t.values[0] for t in done], "o", color="0.6", label="trials")
        axes.plot([t.number for t in best], [t.values[0] for t in best], "o", color="C3", label="best")
        axes.set_xlabel("trial")
        axes.set_ylabel(objectives[0])
    else:
        axes.plot([t.values[0] for t in done], [t.values[1] for t in done], "o", color="0.6", label="trials")
        axes.plot([t.values[0] for t in best], [t.values[1] for t in best], "o-", color="C3", label="Pareto front")
        for t in best:
            axes.annotate(str(t.number), (t.values[0], t.values[1]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axes.set_xlabel(objectives[0])
        axes.set_ylabel(objectives[1])
    axes.set_title(study.study_name)
    axes.legend(loc="best", fontsize=8)
    return figure


# ------------------------------------------------------------------------------------ the sweep
@dataclass(frozen=True)
class SweepResult:
    """What a finished sweep left: the study, its MLflow sweep run and the front."""

    study: optuna.Study
    parent_run_id: str
    tracking_uri: str
    experiment_name: str
    front: list[dict]


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
    needed = [o for o in spec.objectives if o in ("fid", "score")]
    metrics = list(config["model.evaluation.metrics"] or [])
    if any(o not in metrics for o in needed):
        fixed["model.evaluation.metrics"] = [*metrics, *(o for o in needed if o not in metrics)]
    widest = max((len(p.extremes()) for p in spec.search_space), default=0)
    for i in range(widest):
        point = {p.path: p.extremes()[i % len(p.extremes())] for p in spec.search_space}
        fit.parse({**fixed, **point}, "search_space")
    logger = config["trainer.logger"]
    if not (hasattr(logger, "class_path") and logger.class_path.endswith("MLFlowLogger")):
        raise SweepError(
            f"Sweeps record every trial in MLflow, but the fit config's trainer.logger is {logger!r}. Use "
            f"lightning.pytorch.loggers.MLFlowLogger (the packaged default does)."
        )
    uri = spec.tracking_uri or config[f"{LOGGER_ARGS}.tracking_uri"]
    if not uri:
        raise SweepError("No MLflow tracking URI: set trainer.logger.init_args.tracking_uri or pass --tracking-uri.")
    experiment = spec.experiment_name or config[f"{LOGGER_ARGS}.experiment_name"]
    return PreparedSweep(fit, fixed, uri, experiment, int(config["model.evaluation.every_n_rounds"]))


def run_sweep(spec: SweepSpec, on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> SweepResult:
    """Run ``spec.n_trials`` more trials of the study (created or resumed by name) and log the front."""
    prepared = prepare(spec)
    uri, experiment = prepared.tracking_uri, prepared.experiment_name
    check_tracking_uri(uri)
    study = _study(spec)
    client = MlflowClient(uri)
    experiment_id = _experiment_id(client, experiment, uri)
    parent = _parent_run(client, experiment_id, study, spec)
    client.log_dict(parent, spec.to_dict(), "sweep.yaml")
    trials = _Trials(spec, prepared, client, experiment_id, parent)
    try:
        study.optimize(trials, n_trials=spec.n_trials, catch=(Exception,), callbacks=[on_trial] if on_trial else None)
    except BaseException:
        client.set_terminated(parent, "KILLED")
        raise
    front = front_rows(study, spec.objectives)
    client.log_dict(parent, front, "pareto_front.json")
    client.log_figure(parent, front_figure(study, spec.objectives), "pareto_front.png")
    states = [t.state for t in study.trials]
    client.log_batch(parent, metrics=[
        Metric(f"sweep/{state.name.lower()}_trials", states.count(state), _now_ms(), len(study.trials))
        for state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    ])
    client.set_terminated(parent, "FINISHED")
    return SweepResult(study, parent, uri, experiment, front)


def _study(spec: SweepSpec) -> optuna.Study:
    """Create the study, or load it by name; its directions must match the spec's objectives."""
    try:
        existing = optuna.load_study(study_name=spec.study_name, storage=spec.storage)
    except KeyError:
        existing = None
    except Exception as err:  # a malformed URL or an unreachable database: one clear message
        raise SweepError(
            f"Cannot open the Optuna storage {spec.storage!r} ({type(err).__name__}: {err}). Give a database URL "
            f"such as sqlite:///optuna.db (--storage)."
        ) from err
    if existing is not None:
        directions = [d.name.lower() for d in existing.directions]
        if directions != spec.directions:
            raise SweepError(
                f"Study {spec.study_name!r} in {spec.storage} optimises {directions}, but the spec's objectives "
                f"{list(spec.objectives)} need {spec.directions}. Use another study name (--study-name)."
            )
    offset = len(existing.trials) if existing is not None else 0
    return optuna.create_study(
        study_name=spec.study_name,
        storage=spec.storage,
        directions=spec.directions,
        sampler=spec.make_sampler(seed_offset=offset),
        pruner=spec.make_pruner(),
        load_if_exists=True,
    )


def with_overrides(spec: SweepSpec, **overrides: Any) -> SweepSpec:
    """The spec with the command line's settings (None leaves a setting as the spec has it)."""
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None})
