"""The search space: one `Parameter` per searched fit key, its ``when:`` conditions, and the order
in which a trial samples them so that every condition is known before the parameter it guards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from .errors import SweepError

PARAMETER_KINDS = ("int", "float", "categorical")


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
        """The parameter a ``search_space`` entry describes; a `SweepError` names what is wrong with it."""
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
        """The entry as a spec writes it (the sweep run's ``sweep.yaml``)."""
        if self.kind == "categorical":
            entry = {"type": self.kind, "choices": list(self.choices)}
        else:
            entry = {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}
            entry = entry if self.step is None else {**entry, "step": self.step}
        return {**entry, "when": {path: list(allowed) for path, allowed in self.when}} if self.when else entry


def sample(space: Sequence[Parameter], fixed: Mapping[str, Any], trial: optuna.Trial) -> dict[str, Any]:
    """A trial's values for the parameters that apply to it, in ``space``'s (sampling) order."""
    sampled: dict[str, Any] = {}
    for parameter in space:
        if parameter.applies({**fixed, **sampled}):
            sampled[parameter.path] = parameter.suggest(trial)
    return sampled


def sampling_order(space: Sequence[Parameter], fixed: Mapping[str, Any]) -> tuple[Parameter, ...]:
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
