"""Optuna sweeps over fit configurations, every trial a nested MLflow run under one sweep run.

A sweep spec (YAML, see ``sweeps/``) names a study, its objectives (``fid``, ``score``,
``latency``), fixed fit overrides and a search space over dotted fit config keys. Every path is
checked against the real fit parser before any trial runs. Two or more objectives use NSGA-II;
one objective uses TPE, with pruning on the per-round evaluation when it is ``score`` or ``fid``.
A failed trial is recorded as failed (in Optuna and MLflow) and the study goes on; at the end the
Pareto front is logged to the sweep's parent run as JSON and PNG. Studies resume by name. Several
processes (``workers``, or the same command started again while one runs) share one study and one
sweep run and run the requested trials once between them.

Modules: ``spec`` (the spec and its file), ``search_space`` (parameters and conditions),
``fit_config`` (the fit parser's checks), ``prepare`` (the checks before any trial), ``trials``
(the objective), ``pruning``, ``runs`` (MLflow records), ``report`` (the front), ``storage`` (the
Optuna storage and study), ``locks`` (the study's locks), ``session`` (the trials a command adds,
shared by its processes), ``workers`` (the trial loop and worker processes), ``runner``.
"""

from .errors import SweepError, TrialError
from .fit_config import DICT_SETTINGS, LOGGER_ARGS, FitConfig, format_value
from .prepare import PreparedSweep, prepare
from .pruning import RoundPruning
from .report import format_front, format_params, front_figure, front_rows, state_counts
from .runner import SweepResult, run_sweep
from .search_space import PARAMETER_KINDS, Parameter
from .spec import OBJECTIVE_DIRECTIONS, SPEC_KEYS, SweepSpec, load_sweep, sweep_from_mapping, with_overrides
from .trials import objective_values

__all__ = [
    "DICT_SETTINGS",
    "LOGGER_ARGS",
    "OBJECTIVE_DIRECTIONS",
    "PARAMETER_KINDS",
    "SPEC_KEYS",
    "FitConfig",
    "Parameter",
    "PreparedSweep",
    "RoundPruning",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "TrialError",
    "format_front",
    "format_params",
    "front_figure",
    "front_rows",
    "format_value",
    "load_sweep",
    "objective_values",
    "prepare",
    "run_sweep",
    "state_counts",
    "sweep_from_mapping",
    "with_overrides",
]
