"""What a sweep shows: trial-state counts, the Pareto front (or best trial) as rows, a text table
and a figure, and one trial's params as text (shared by the table and the command's progress lines)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

# The end states a sweep counts, in the order it reports them.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def state_counts(trials: Iterable[FrozenTrial]) -> dict[TrialState, int]:
    """How many trials ended complete, failed and pruned."""
    states = [t.state for t in trials]
    return {state: states.count(state) for state in COUNTED_STATES}


def format_params(params: Mapping[str, Any]) -> str:
    """A trial's params as ``key=value`` pairs, floats to 4 significant digits."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


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
        values = "".join(f"{row[o]:>12.4f}" for o in objectives)
        lines.append(f"{row['trial']:>5}  {values}  {format_params(row['params'])}")
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
