"""What a comparison runs: methods x scenarios x seeds, read from a YAML spec in ``configs/compare/``.

A method is a name plus fit overrides (``{fedavg: {model.federation.mode: fedavg}}``, or just a
method name, shorthand for ``{NAME: {model.federation.mode: NAME}}``); a scenario is a fit config file
holding a ``data:`` section, or such a section inline. ``base_config`` and ``fixed`` give the
shared budget and evaluation sizes. This module reads and shapes the spec; checking it against the
fit parser is `huscf_lightning.compare.prepare`'s job.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from huscf_lightning.errors import HuSCFError
from huscf_lightning.federation.strategy import known_strategies
from huscf_lightning.sweep.fit_config import resolve_base_config

# A method named alone is a registered strategy (`known_strategies`: the baselines, the split variants with
# kld_clustered = HuSCF-GAN, and any a user registered before the comparison runs); one given by class path
# goes in a mapping, {name: {model.federation.mode: pkg.module.Class}}.
SPEC_KEYS = ("name", "methods", "scenarios", "seeds", "base_config", "fixed", "ours", "tracking_uri", "experiment_name",
             "privacy_attacks")


class CompareError(HuSCFError, ValueError):
    """A comparison that cannot run as specified; the message names the problem and the fix."""


@dataclass(frozen=True)
class Method:
    """One compared method: its name in the table and the fit overrides (dotted keys) that make it."""

    name: str
    overrides: Mapping[str, Any]


@dataclass(frozen=True)
class Scenario:
    """One data scenario: a fit config file with a ``data:`` section, or that section inline."""

    name: str
    config: str | None = None
    data: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Cell:
    """One fit of the comparison: a method on a scenario with a seed."""

    method: str
    scenario: str
    seed: int

    @property
    def key(self) -> str:
        """The MLflow tag that identifies the cell, so a resumed comparison finds it."""
        return f"method={self.method}|scenario={self.scenario}|seed={self.seed}"

    @property
    def label(self) -> str:
        return f"{self.method} x {self.scenario} x seed {self.seed}"


@dataclass(frozen=True)
class CompareSpec:
    """A comparison: every method on every scenario with every seed, all on one budget.

    ``ours`` names the method whose relative gain over each other method the table reports
    (default ``kld_clustered`` when it is compared; none otherwise). ``tracking_uri`` and
    ``experiment_name`` default to the fit config's MLFlowLogger settings. ``privacy_attacks``: run the server's
    attacks (`huscf_lightning.privacy.attacks`) on every cell once it is trained, with these settings (``{}``:
    the defaults), and put what they recover beside utility and FID (None: no attacks).
    """

    name: str
    methods: tuple[Method, ...]
    scenarios: tuple[Scenario, ...]
    seeds: tuple[int, ...] = (0,)
    base_config: str | None = None
    fixed: Mapping[str, Any] = field(default_factory=dict)
    ours: str | None = None
    tracking_uri: str | None = None
    experiment_name: str | None = None
    privacy_attacks: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise CompareError("A comparison needs a name (the MLflow parent run is found by it when resuming).")
        if not self.methods or not self.scenarios or not self.seeds:
            raise CompareError(
                f"Comparison {self.name!r} needs at least one method, one scenario and one seed; got "
                f"{len(self.methods)} method(s), {len(self.scenarios)} scenario(s), seeds {list(self.seeds)}."
            )
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise CompareError(f"seeds must be distinct integers, e.g. [0, 1, 2]; got {list(self.seeds)}.")
        names = [m.name for m in self.methods]
        if self.ours is not None and self.ours not in names:
            raise CompareError(f"ours: {self.ours!r} is not among the compared methods {names}; name one of them.")
        if self.ours is None and "kld_clustered" in names:
            object.__setattr__(self, "ours", "kld_clustered")

    @property
    def cells(self) -> list[Cell]:
        """Every cell, scenario by scenario and seed by seed, so each finished seed compares all methods."""
        return [
            Cell(method.name, scenario.name, seed)
            for scenario, seed, method in itertools.product(self.scenarios, self.seeds, self.methods)
        ]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "methods": {m.name: dict(m.overrides) for m in self.methods},
            "scenarios": {s.name: s.config if s.config is not None else {"data": dict(s.data or {})} for s in self.scenarios},
            "seeds": list(self.seeds),
            "base_config": self.base_config,
            "fixed": dict(self.fixed),
            "ours": self.ours,
            "tracking_uri": self.tracking_uri,
            "experiment_name": self.experiment_name,
            "privacy_attacks": None if self.privacy_attacks is None else dict(self.privacy_attacks),
        }


def _methods(entry: object, where: str) -> tuple[Method, ...]:
    """Methods from a list of names (each becomes ``{model.federation.mode: NAME}``) or a mapping name -> overrides."""
    if isinstance(entry, list):
        known = known_strategies()
        unknown = [n for n in entry if n not in known]
        if unknown:
            hints = {str(n): difflib.get_close_matches(str(n), known, n=1) or "none" for n in unknown}
            raise CompareError(
                f"{where}: unknown method(s) {unknown} (close: {hints}). Name methods among {known}, "
                f"or give a mapping of your own names to fit overrides, e.g. {{mine: {{model.federation.mode: fedavg}}}}."
            )
        if len(set(entry)) != len(entry):
            raise CompareError(f"{where}: methods {entry} name a method twice; list each once.")
        return tuple(Method(name, {"model.federation.mode": name}) for name in entry)
    if isinstance(entry, Mapping):
        bad = [n for n, o in entry.items() if not isinstance(o, Mapping) and o is not None]
        if bad:
            raise CompareError(
                f"{where}: method(s) {bad} must map to fit overrides (dotted keys), e.g. "
                f"{{fedavg: {{model.federation.mode: fedavg}}}}."
            )
        return tuple(Method(str(name), dict(overrides or {})) for name, overrides in entry.items())
    raise CompareError(
        f"{where}: methods must be a list of method names {known_strategies()} or a mapping of names to fit "
        f"overrides; got {entry!r}."
    )


def _scenario_path(value: str, folder: Path | None, where: str) -> str:
    path = Path(value) if folder is None or Path(value).is_absolute() else folder / value
    if not path.is_file():
        raise CompareError(
            f"{where}: scenario file {str(path)!r} does not exist (a relative path is taken from the spec's folder); "
            f"give a fit config with a data: section, such as configs/scenarios/offline3.yaml, or the data inline."
        )
    return str(path)


def _scenarios(entry: object, where: str, folder: Path | None) -> tuple[Scenario, ...]:
    """Scenarios from a list of files (named by their stem) or a mapping name -> file or ``{data: ...}``."""
    if isinstance(entry, list):
        scenarios = [Scenario(Path(str(v)).stem, config=_scenario_path(str(v), folder, where)) for v in entry]
    elif isinstance(entry, Mapping):
        scenarios = []
        for name, value in entry.items():
            if isinstance(value, str):
                scenarios.append(Scenario(str(name), config=_scenario_path(value, folder, where)))
            elif isinstance(value, Mapping) and set(value) == {"data"} and isinstance(value["data"], Mapping):
                scenarios.append(Scenario(str(name), data=dict(value["data"])))
            else:
                raise CompareError(
                    f"{where}: scenario {name!r} must be a fit config file or an inline {{data: {{domains: [...], ...}}}} "
                    f"mapping with the data section only; got {value!r}."
                )
    else:
        raise CompareError(f"{where}: scenarios must be a list of fit config files or a mapping of names to files or data.")
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise CompareError(f"{where}: scenario names {names} repeat; give each scenario its own name (mapping form).")
    return tuple(scenarios)


def compare_from_mapping(data: object, where: str = "compare spec", folder: Path | None = None) -> CompareSpec:
    """A `CompareSpec` from parsed YAML; files are taken relative to ``folder`` (the spec's)."""
    if not isinstance(data, Mapping):
        raise CompareError(f"{where} must be a YAML mapping with keys among {list(SPEC_KEYS)}.")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        hints = {k: difflib.get_close_matches(k, SPEC_KEYS, n=1) or "none" for k in unknown}
        raise CompareError(f"{where} has unknown key(s) {unknown} (close: {hints}); the keys are {list(SPEC_KEYS)}.")
    for key in ("methods", "scenarios"):
        if key not in data:
            raise CompareError(f"{where} has no {key}: a comparison runs every method on every scenario.")
    if not isinstance(data.get("fixed") or {}, Mapping):
        raise CompareError(f"{where}: fixed must map dotted fit keys to values, e.g. {{model.rounds: 3}}.")
    seeds = data.get("seeds", [0])
    attacks = data.get("privacy_attacks")
    if attacks is True:
        attacks = {}
    elif attacks is False:
        attacks = None
    if attacks is not None and not isinstance(attacks, Mapping):
        raise CompareError(
            f"{where}: privacy_attacks must be true (the attacks' default settings), false, or a mapping of attack "
            f"settings, e.g. {{batch_size: 64}}; got {attacks!r}."
        )
    base = resolve_base_config(data.get("base_config"), folder, where, CompareError)
    return CompareSpec(
        name=data.get("name"),
        methods=_methods(data["methods"], where),
        scenarios=_scenarios(data["scenarios"], where, folder),
        seeds=tuple(seeds if isinstance(seeds, list) else [seeds]),
        base_config=base,
        fixed=dict(data.get("fixed") or {}),
        ours=data.get("ours"),
        tracking_uri=data.get("tracking_uri"),
        experiment_name=data.get("experiment_name"),
        privacy_attacks=None if attacks is None else dict(attacks),
    )


def load_compare(path: str | Path) -> CompareSpec:
    """Read a comparison spec YAML file."""
    path = Path(path)
    if not path.is_file():
        raise CompareError(f"No comparison spec at {str(path)!r}; give a YAML file such as configs/compare/smoke.yaml.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CompareError(f"{path} is not valid YAML ({err}); fix the file.") from err
    return compare_from_mapping(data, str(path), path.parent)
