"""Running a session's trials: the claim-run-tell loop of one process, and N worker processes started and
watched by the command's process (each fit in its own process: torch threads and Lightning state are
per process). A worker that dies has its running trial marked failed; the others go on."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

import optuna
import torch
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from huscf_lightning.compat import set_trial_user_attr_on_storage

from .locks import StudyLocks
from .prepare import prepare
from .runs import end_trial_run
from .session import WORKER_ATTR, Claims, Session, worker_id
from .spec import SweepSpec
from .storage import open_storage
from .trials import Trials

log = logging.getLogger(__name__)

# Seconds between two looks at the study (progress) while workers run.
POLL_S = 1.0


def run_trials(
    study: optuna.Study, objective: Trials, claim: Callable[[], optuna.Trial | None], after: Callable[[], None]
) -> None:
    """Claim, run and record trials until the session has them all. A trial that raises is recorded as failed
    and the loop goes on (Ctrl-C and the like: recorded, then raised); ``after`` runs after each trial."""
    while (trial := claim()) is not None:
        try:
            values = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except Exception as err:
            log.warning("trial %d failed: %s: %s", trial.number, type(err).__name__, err, exc_info=True)
            study.tell(trial, state=TrialState.FAIL)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            study.tell(trial, values)
        after()


def run_workers(
    spec: SweepSpec, session: Session, workers: int, client: MlflowClient, experiment_id: str, after: Callable[[], None]
) -> list[str]:
    """Run the session's trials in ``workers`` processes; call ``after`` as they go; return one line per worker
    that died (exit status not 0), whose running trial is then marked failed."""
    context = multiprocessing.get_context("spawn")
    threads = max(1, _cores() // workers)
    level = logging.getLogger("huscf_lightning").getEffectiveLevel()
    processes = [
        context.Process(
            target=_worker,
            args=(spec, session.locks, session.target, session.parent_run_id, experiment_id, index, threads, level,
                  optuna.logging.get_verbosity()),
            name=f"sweep-worker-{index}",
        )
        for index in range(workers)
    ]
    # Ctrl-C stops the command, which then stops its workers: interrupted mid-write, a worker would keep the
    # SQLite stores locked while it records its own end
    with _sigint_ignored():
        for process in processes:
            process.start()
    log.info("%d worker processes (%d torch threads each) run study %r", workers, threads, spec.study_name)
    running, dead = dict(enumerate(processes)), []
    try:
        while running:
            wait([p.sentinel for p in running.values()], timeout=POLL_S)
            for index, process in list(running.items()):
                if process.exitcode is None:
                    continue
                del running[index]
                if process.exitcode != 0:
                    dead.append(_death(session.study, client, index, process))
            after()
    finally:
        # the command itself was stopped: stop its workers at once (SIGKILL: a fit defers SIGTERM), then record
        # what they were running
        for process in running.values():
            process.kill()
        for process in running.values():
            process.join()
            _fail_running_trials(session.study, client, process, "the sweep command was stopped")
    return dead


def _worker(
    spec: SweepSpec, locks: StudyLocks, target: int, parent_run_id: str, experiment_id: str, index: int,
    threads: int, level: int, optuna_verbosity: int,
) -> None:
    """One worker process: the session's trials until it has them all, or until the command that started it ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    command = os.getppid()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(levelname)s %(name)s [worker {index}]: %(message)s"))
    package_log = logging.getLogger("huscf_lightning")
    package_log.addHandler(handler)
    package_log.setLevel(level)
    optuna.logging.set_verbosity(optuna_verbosity)
    torch.set_num_threads(threads)
    prepared = prepare(spec)
    study = optuna.load_study(study_name=spec.study_name, storage=open_storage(spec.storage), pruner=spec.make_pruner())
    client = MlflowClient(prepared.tracking_uri)
    objective = Trials(spec, prepared, client, experiment_id, parent_run_id)

    def stop_when_orphaned() -> None:
        if os.getppid() != command:  # the command was killed: claim no more trials
            log.warning("the sweep command (pid %d) has ended; this worker stops", command)
            raise SystemExit(1)

    run_trials(study, objective, Claims(study, spec, locks, target), after=stop_when_orphaned)


def _death(study: optuna.Study, client: MlflowClient, index: int, process: BaseProcess) -> str:
    """Mark the dead worker's running trial failed; the line that reports it."""
    code = process.exitcode
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    message = f"worker {index} (pid {process.pid}) {how}"
    failed = _fail_running_trials(study, client, process, f"its worker process {how}")
    if failed:
        message += f"; its trial(s) {failed} are marked FAIL"
    log.warning("%s", message)
    return message


def _fail_running_trials(study: optuna.Study, client: MlflowClient, process: BaseProcess, why: str) -> list[int]:
    """Record the trials a process left running as failed, in Optuna and MLflow; their numbers."""
    owner = worker_id(process.pid)
    orphans = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.user_attrs.get(WORKER_ATTR) == owner]
    error = f"The trial stopped because {why}."
    for trial in orphans:
        # the reason, as a failed trial's objective records it (Optuna's API sets attributes only on live trials)
        set_trial_user_attr_on_storage(study, trial, "error", error)
        study.tell(trial.number, state=TrialState.FAIL)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is not None:
            end_trial_run(client, run_id, RunStatus.FAILED, "FAIL", error)
    return [t.number for t in orphans]


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ctrl-C ignored meanwhile, so processes started inside ignore it from their first instruction (a signal set to
    be ignored stays so in a new process). Only the main thread can set it; elsewhere the worker sets it itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
