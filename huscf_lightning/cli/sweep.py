"""The ``sweep`` command: run (or resume) an Optuna study of fit runs described by a sweep spec.

``python -m huscf_lightning sweep --config sweeps/cuts_and_clusters.yaml --n-trials 6`` prints one
line per finished trial and, at the end, the Pareto front as a table; every trial is a child run
of the sweep's run in MLflow. ``--workers N`` runs the trials in N processes; the same command started
again while one runs joins it (same study, same sweep run, the trials it was asked for run once).
"""

from __future__ import annotations

import argparse
import sys

import optuna
from optuna.trial import FrozenTrial, TrialState

from huscf_lightning.sweep import format_front, format_params, load_sweep, run_sweep, state_counts, with_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``sweep`` command."""
    parser.add_argument("--config", required=True, help="sweep spec YAML, e.g. sweeps/cuts_and_clusters.yaml")
    parser.add_argument("--n-trials", type=int, default=None, help="trials to run now (default: the spec's n_trials)")
    parser.add_argument("--study-name", default=None, help="Optuna study name; an existing study is resumed")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: the spec's, sqlite:///optuna.db)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the fit config's logger)")
    parser.add_argument(
        "--workers", type=int, default=1,
        help="processes running trials in parallel on the study (default 1: this one; more need a file or server storage)",
    )


def trial_line(trial: FrozenTrial, objectives: list[str], index: int, total: int) -> str:
    """One progress line for a finished trial (the ``index``-th of the session's ``total``)."""
    seconds = trial.duration.total_seconds() if trial.duration is not None else float("nan")
    if trial.state == TrialState.COMPLETE:
        outcome = ", ".join(f"{o}={v:.4f}" for o, v in zip(objectives, trial.values))
    elif trial.state == TrialState.PRUNED and trial.last_step is not None:
        outcome = f"pruned at round {trial.last_step} ({objectives[0]} {trial.intermediate_values[trial.last_step]:.4f})"
    else:
        outcome = trial.user_attrs.get("error", "").replace("\n", " ")[:200]
    head = f"[{index}/{total}] trial {trial.number} {trial.state.name} in {seconds:.0f} s"
    return f"{head}: {outcome} | {format_params(trial.params)}"


def run(args: argparse.Namespace) -> int:
    """Run the command on parsed arguments; prints progress and the front to stdout, returns the exit code."""
    spec = with_overrides(
        load_sweep(args.config),
        n_trials=args.n_trials,
        study_name=args.study_name,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = list(spec.objectives)

    def progress(trial: FrozenTrial, index: int, total: int) -> None:
        sys.stdout.write(trial_line(trial, objectives, index, total) + "\n")
        sys.stdout.flush()

    result = run_sweep(spec, on_trial=progress, workers=args.workers)
    counts = state_counts(result.study.trials)
    sys.stdout.write(
        f"\nStudy {spec.study_name!r} in {spec.storage}: {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.FAIL]} failed, {counts[TrialState.PRUNED]} pruned trials in all.\n"
    )
    title = "Pareto front" if len(objectives) > 1 else "Best trial"
    sys.stdout.write(f"{title} ({', '.join(f'{o}: {d}' for o, d in zip(objectives, spec.directions))}):\n")
    sys.stdout.write(format_front(result.front, objectives) + "\n")
    if not result.logged:
        sys.stdout.write("Other processes still run trials of this sweep; the last to finish logs the front to its run.\n")
    sys.stdout.write(
        f"\nMLflow sweep run {result.parent_run_id} in experiment {result.experiment_name!r} at {result.tracking_uri}\n"
        f"See it with: mlflow ui --backend-store-uri {result.tracking_uri}\n"
        f"Resume with: python -m huscf_lightning sweep --config {args.config} --study-name {spec.study_name} "
        f"--storage {spec.storage}\n"
    )
    for line in result.dead_workers:
        sys.stderr.write(f"error: sweep {line}.\n")
    return 1 if result.dead_workers else 0
