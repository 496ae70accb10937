"""Running a sweep: check the spec, open (or resume) the study and the sweep run, run the trials,
and log the front and the trial counts to the sweep run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial

from huscf_lightning.tracking import check_tracking_uri, open_experiment

from .errors import SweepError
from .prepare import prepare
from .report import front_figure, front_rows, state_counts
from .runs import now_ms, sweep_run
from .spec import SweepSpec
from .trials import Trials


@dataclass(frozen=True)
class SweepResult:
    """What a finished sweep left: the study, its MLflow sweep run and the front."""

    study: optuna.Study
    parent_run_id: str
    tracking_uri: str
    experiment_name: str
    front: list[dict]


def run_sweep(spec: SweepSpec, on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> SweepResult:
    """Run ``spec.n_trials`` more trials of the study (created or resumed by name) and log the front."""
    prepared = prepare(spec)
    uri, experiment = prepared.tracking_uri, prepared.experiment_name
    check_tracking_uri(uri)
    study = open_study(spec)
    client = MlflowClient(uri)
    experiment_id = open_experiment(client, experiment, uri)
    parent = sweep_run(client, experiment_id, study, spec)
    client.log_dict(parent, spec.to_dict(), "sweep.yaml")
    trials = Trials(spec, prepared, client, experiment_id, parent)
    try:
        study.optimize(trials, n_trials=spec.n_trials, catch=(Exception,), callbacks=[on_trial] if on_trial else None)
    except BaseException:
        client.set_terminated(parent, "KILLED")
        raise
    front = front_rows(study, spec.objectives)
    client.log_dict(parent, front, "pareto_front.json")
    client.log_figure(parent, front_figure(study, spec.objectives), "pareto_front.png")
    client.log_batch(parent, metrics=[
        Metric(f"sweep/{state.name.lower()}_trials", count, now_ms(), len(study.trials))
        for state, count in state_counts(study.trials).items()
    ])
    client.set_terminated(parent, "FINISHED")
    return SweepResult(study, parent, uri, experiment, front)


def open_study(spec: SweepSpec) -> optuna.Study:
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
