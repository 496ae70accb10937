"""Running a sweep: check the spec, open (or resume) the study and the sweep run, or join the session
other processes run on it, run the trials in this process or in worker processes, and leave (the last
process out logs the front and the trial counts to the sweep run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial

from huscf_lightning.engine.tracking import check_tracking_uri, open_experiment, store_lock

from .errors import SweepError
from .locks import StudyLocks
from .prepare import prepare
from .report import front_rows
from .session import Claims, Progress, join_sweep, leave_sweep
from .spec import SweepSpec
from .storage import in_memory, open_storage, storage_key
from .trials import Trials
from .workers import run_trials, run_workers


@dataclass(frozen=True)
class SweepResult:
    """What a sweep left: the study, its MLflow sweep run and the front; ``logged``: this process was the last
    of the session and logged the front; ``dead_workers``: one line per worker process that died."""

    study: optuna.Study
    parent_run_id: str
    tracking_uri: str
    experiment_name: str
    front: list[dict]
    logged: bool = True
    dead_workers: tuple[str, ...] = ()


def run_sweep(
    spec: SweepSpec, on_trial: Callable[[FrozenTrial, int, int], None] | None = None, workers: int = 1
) -> SweepResult:
    """Run ``spec.n_trials`` more trials of the study (created or resumed by name) in ``workers`` processes, or
    join the session other processes run on it. ``on_trial`` gets each finished trial of the session, its rank
    among them and the session's size."""
    check_workers(workers, spec.storage)
    prepared = prepare(spec)
    uri, experiment = prepared.tracking_uri, prepared.experiment_name
    check_tracking_uri(uri)
    storage = open_storage(spec.storage)
    with store_lock(uri):  # sweeps starting together on a fresh store create its tables and experiment in turn
        client = MlflowClient(uri)
        experiment_id = open_experiment(client, experiment, uri)
    locks = StudyLocks(storage_key(spec.storage), spec.study_name)
    session = join_sweep(spec, storage, locks, client, experiment_id)
    study, progress = session.study, Progress(session, on_trial)
    dead: list[str] = []
    try:
        if workers == 1:
            objective = Trials(spec, prepared, client, experiment_id, session.parent_run_id)
            run_trials(study, objective, Claims(study, spec, locks, session.target), progress.poll)
        else:
            dead = run_workers(spec, session, workers, client, experiment_id, progress.poll)
    except BaseException:
        leave_sweep(session, client, spec, "KILLED")
        raise
    progress.poll()
    logged = leave_sweep(session, client, spec, "FINISHED")
    return SweepResult(study, session.parent_run_id, uri, experiment, front_rows(study, spec.objectives), logged, tuple(dead))


def check_workers(workers: int, storage: str | None) -> None:
    """Raise a `SweepError` for a worker count below 1, or several workers on a storage only one process sees."""
    if not isinstance(workers, int) or workers < 1:
        raise SweepError(
            f"--workers must be a whole number >= 1 (the processes that run trials); got {workers!r}. Use 1 to run "
            f"the trials in this process, or more to run them in parallel on one study."
        )
    if workers > 1 and in_memory(storage):
        where = "the spec's storage: null" if storage is None else f"the storage {storage!r}"
        raise SweepError(
            f"--workers {workers} runs trials in {workers} processes, which must share the study, but {where} keeps it "
            f"in one process's memory. Give a file-backed storage, e.g. --storage sqlite:///optuna.db or --storage "
            f"journal:optuna.log."
        )
