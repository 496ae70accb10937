"""A sweep session: the trials one ``sweep`` command adds to a study, shared by every process that runs them.

The first process to open a study (no other running on it) starts a session of ``n_trials`` more trials
(numbers ``first`` to ``target - 1``) under the study's MLflow sweep run; a process started while others
run joins that session instead, so N commands on one study run the requested trials once, not N times.
A trial is claimed under the study's lock, so the session never runs more or fewer trials than asked,
and each process seeds its sampler with the spec's seed plus its first trial's number, so workers never
draw alike.
The last process to leave logs the front.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from .errors import SweepError
from .locks import StudyLocks
from .report import COUNTED_STATES
from .runs import log_front, sweep_run
from .spec import SweepSpec
from .storage import open_study

log = logging.getLogger(__name__)

# Study user attribute: the session's first trial number and its target (first + n_trials).
SESSION_ATTR = "sweep_session"
# Trial user attribute: the process (host:pid) that runs the trial.
WORKER_ATTR = "worker"


@dataclass
class Session:
    """One process's part in a study's session: trials ``first`` to ``target - 1``, under one sweep run."""

    study: optuna.Study
    locks: StudyLocks
    first: int
    target: int
    parent_run_id: str

    @property
    def size(self) -> int:
        """How many trials the session runs."""
        return self.target - self.first


def join_sweep(
    spec: SweepSpec, storage: BaseStorage, locks: StudyLocks, client: MlflowClient, experiment_id: str
) -> Session:
    """Open the study and take part in its session: start one (``spec.n_trials`` more trials, the study's
    sweep run reused or created) when no other process runs it, else join the one they run."""
    with locks.claim():
        study = open_study(spec, storage)
        started = locks.join()
        try:
            if started:
                first = len(study.get_trials(deepcopy=False))
                target = first + spec.n_trials
                study.set_user_attr(SESSION_ATTR, {"first": first, "target": target})
                parent = sweep_run(client, experiment_id, study, spec)
                client.log_dict(parent, spec.to_dict(), "sweep.yaml")
            else:
                first, target = (study.user_attrs[SESSION_ATTR][k] for k in ("first", "target"))
                parent = _running_sweep_run(client, experiment_id, study, spec)
                log.info(
                    "joining the sweep other processes run on study %r: trials %d to %d (their --n-trials, not this "
                    "command's)", spec.study_name, first, target - 1,
                )
        except BaseException:
            locks.leave()
            raise
    return Session(study, locks, first, target, parent)


@dataclass
class Claims:
    """This process's claims on the session's trials: each call gives the study's next trial, or None once the
    session has all its trials (counted over every process: a trial counts from its claim, whatever its end).

    The sampler is seeded at the process's first claim with the spec's seed plus that trial's number: unique per
    process, so workers never draw alike, and one process samples as it always did.
    """

    study: optuna.Study
    spec: SweepSpec
    locks: StudyLocks
    target: int
    _seeded: bool = False

    def __call__(self) -> optuna.Trial | None:
        with self.locks.claim():
            number = len(self.study.get_trials(deepcopy=False))
            if number >= self.target:
                return None
            if not self._seeded:
                self.study.sampler = self.spec.make_sampler(seed_offset=number)
                self._seeded = True
            trial = self.study.ask()
            trial.set_user_attr(WORKER_ATTR, worker_id())
        return trial


def leave_sweep(session: Session, client: MlflowClient, spec: SweepSpec, status: str) -> bool:
    """Stop taking part; the last process out logs the front (when the session finished) and ends the sweep
    run with ``status``. True when this process was the last."""
    with session.locks.claim():
        last = session.locks.leave()
        if last:
            if status == "FINISHED":
                log_front(client, session.parent_run_id, session.study, spec.objectives)
            client.set_terminated(session.parent_run_id, status)
        else:
            log.info("other processes still run trials of study %r; the last to finish logs the front", spec.study_name)
    return last


def worker_id(pid: int | None = None) -> str:
    """The ``host:pid`` recorded on the trials a process runs."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


@dataclass
class Progress:
    """Hands each finished trial of the session to ``on_trial`` once, with its rank among the session's
    finished trials and the session's size; trials of every process count."""

    session: Session
    on_trial: Callable[[FrozenTrial, int, int], None] | None
    _seen: set[int] = field(default_factory=set)

    def poll(self) -> None:
        """Report the session's trials that finished since the last look, in the order they finished."""
        if self.on_trial is None:
            return
        first, target = self.session.first, self.session.target
        finished = self.session.study.get_trials(deepcopy=False, states=COUNTED_STATES)
        new = [t for t in finished if first <= t.number < target and t.number not in self._seen]
        for trial in sorted(new, key=lambda t: (t.datetime_complete, t.number)):
            self._seen.add(trial.number)
            self.on_trial(trial, len(self._seen), self.session.size)


def _running_sweep_run(client: MlflowClient, experiment_id: str, study: optuna.Study, spec: SweepSpec) -> str:
    """The sweep run the processes already running log to; it must be in this process's MLflow experiment."""
    parent = study.user_attrs.get("mlflow_parent_run_id")
    try:
        run = client.get_run(parent) if parent else None
    except MlflowException:
        run = None
    if run is None or run.info.experiment_id != experiment_id:
        raise SweepError(
            f"Other processes run study {spec.study_name!r} and log to MLflow sweep run {parent}, which is not in "
            f"experiment {experiment_id} of this process's store. Give every worker the same --tracking-uri and "
            f"experiment_name."
        )
    return parent
