"""What to sweep: `SweepSpec` (study, objectives, fixed overrides, search space, sampler, pruner),
read from a YAML file with every mistake reported as a `SweepError` naming the file and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import yaml

from .errors import SweepError
from .fit_config import resolve_base_config
from .search_space import Parameter, sampling_order

# Objective -> Optuna direction. fid and score are means over domains of the last per-round value.
OBJECTIVE_DIRECTIONS = {"fid": "minimize", "score": "maximize", "latency": "minimize"}
# Objectives read from the run's evaluation metrics (latency comes from the split plan).
EVAL_OBJECTIVES = ("fid", "score")
SPEC_KEYS = (
    "study_name", "storage", "objectives", "n_trials", "base_config", "fixed", "search_space",
    "seed", "sampler", "pruner", "tracking_uri", "experiment_name",
)
EXAMPLE_SPEC = "sweeps/cuts_and_clusters.yaml"


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
        object.__setattr__(self, "search_space", sampling_order(self.search_space, self.fixed))
        self.make_sampler()
        self.make_pruner()

    @property
    def directions(self) -> list[str]:
        """Optuna's direction for each objective, in order."""
        return [OBJECTIVE_DIRECTIONS[o] for o in self.objectives]

    @property
    def pruning_monitor(self) -> str | None:
        """The per-round metric a single-objective sweep prunes on (None: no pruning)."""
        if len(self.objectives) == 1 and self.objectives[0] in EVAL_OBJECTIVES:
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
        """The spec as YAML-ready data (the sweep run's ``sweep.yaml``)."""
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
        raise SweepError(
            f"{where} must be a YAML mapping with keys among {list(SPEC_KEYS)}, but it holds a "
            f"{type(data).__name__} ({_clip(data)}); write one key per line, e.g. `study_name: demo`, "
            f"as in {EXAMPLE_SPEC}."
        )
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
    values["base_config"] = resolve_base_config(values.get("base_config"), folder, where, SweepError)
    return SweepSpec(search_space=space, **values)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read a sweep spec YAML file."""
    path = Path(path)
    return sweep_from_mapping(_read_yaml(path), f"The sweep spec {str(path)!r}", path.parent)


def with_overrides(spec: SweepSpec, **overrides: Any) -> SweepSpec:
    """The spec with the command line's settings (None leaves a setting as the spec has it)."""
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None})


def _read_yaml(path: Path) -> object:
    """The parsed content of a spec file; a missing, unreadable, binary, malformed or empty file is a `SweepError`."""
    name = str(path)
    if not path.is_file():
        raise SweepError(f"No sweep spec at {name!r}; give a YAML file such as {EXAMPLE_SPEC}.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise _not_text(name, f"byte {err.start} is not UTF-8") from err
    except OSError as err:
        raise SweepError(f"Cannot read the sweep spec {name!r} ({err.strerror}); check its permissions.") from err
    try:
        data = yaml.safe_load(text)
    except yaml.reader.ReaderError as err:  # a character YAML does not allow, such as a NUL byte
        line = text.count("\n", 0, err.position) + 1
        column = err.position - text.rfind("\n", 0, err.position)
        raise _not_text(name, f"character {chr(err.character)!r} at line {line}, column {column}") from err
    except yaml.MarkedYAMLError as err:
        raise SweepError(
            f"The sweep spec {name!r} is not valid YAML: {_yaml_problem(err)}. Fix the YAML there (indent with "
            f"spaces, not tabs; close every bracket and quote; quote values holding ': ' or ' #') and run again."
        ) from err
    except yaml.YAMLError as err:
        detail = " ".join(str(err).split())
        raise SweepError(f"The sweep spec {name!r} is not valid YAML ({detail}); fix it and run again.") from err
    if data is None:
        raise SweepError(
            f"The sweep spec {name!r} is empty; write a YAML mapping with at least study_name and search_space, "
            f"as in {EXAMPLE_SPEC}."
        )
    return data


def _not_text(name: str, detail: str) -> SweepError:
    return SweepError(
        f"The sweep spec {name!r} is not a text file ({detail}); give a UTF-8 YAML file such as {EXAMPLE_SPEC}."
    )


def _yaml_problem(err: yaml.MarkedYAMLError) -> str:
    """The parser's complaint on one line, with the 1-based line and column it points at."""
    def at(mark: yaml.Mark | None) -> str:
        return "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"

    problem = f"{err.problem or 'unexpected content'}{at(err.problem_mark)}"
    problem = f"{problem} ({err.context}{at(err.context_mark)})" if err.context else problem
    return " ".join(problem.split())


def _clip(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."
