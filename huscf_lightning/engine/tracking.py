"""MLflow record of a run: thin helpers over Lightning's MLFlowLogger for artifacts and round metrics.

Every callback logs through these, so a run without an MLflow logger (a unit test, a user's own
logger) still trains: the helpers then do nothing beyond a debug message.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning.pytorch as pl
import requests
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from huscf_lightning.errors import HuSCFError

log = logging.getLogger(__name__)


class TrackingError(HuSCFError, ValueError):
    """An MLflow store that cannot be used; the message names the fix."""


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path)


def check_tracking_uri(uri: str) -> None:
    """Fail fast on a store MLflow cannot use: a server that does not answer (MLflow itself would
    retry for minutes), a SQLite file whose folder does not exist (a deep SQLAlchemy error), or one
    that cannot be written (MLflow retries for about 100 s, then SQLite reports a read-only database)."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = sqlite_path(uri)
        if path is not None:
            _check_sqlite_file(uri, path)
        return
    if parsed.scheme not in ("http", "https"):
        return
    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=5)
    except requests.RequestException as err:
        raise TrackingError(
            f"The MLflow tracking server at {uri} cannot be reached ({type(err).__name__}). Start it "
            f"(`mlflow server --host 127.0.0.1 --port <port>`), or give a reachable tracking URI, "
            f"e.g. sqlite:///mlflow.db."
        ) from err
    if not response.ok:
        raise TrackingError(
            f"{uri} answered {response.status_code} to MLflow's health check, so it is not an MLflow tracking "
            f"server (or it is unwell). Check the address and port, or give another tracking URI, e.g. sqlite:///mlflow.db."
        )


def mlflow_logger(trainer: pl.Trainer) -> MLFlowLogger | None:
    """The trainer's MLFlowLogger, or None when the run is not tracked in MLflow."""
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger
    return None


def log_round_metrics(trainer: pl.Trainer, metrics: dict[str, float], round_index: int) -> None:
    """Per-round metrics (step = round index) on every logger of the trainer.

    They also go into ``trainer.callback_metrics``, so monitors (checkpointing, Optuna pruning)
    can watch a per-round score.
    """
    if trainer.sanity_checking or not metrics:
        return
    trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in metrics.items()})
    for logger in trainer.loggers:
        logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=round_index)


def log_artifact_file(trainer: pl.Trainer, path: str | Path, artifact_path: str | None = None) -> None:
    """Upload a local file as an artifact of the run."""
    logger = mlflow_logger(trainer)
    if logger is None:
        log.debug("no MLflow logger; artifact %s not uploaded", path)
        return
    logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)


def log_text(trainer: pl.Trainer, text: str, name: str, artifact_path: str | None = None) -> None:
    """Write ``text`` to an artifact file called ``name``."""
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / name
        file.write_text(text)
        log_artifact_file(trainer, file, artifact_path)


def log_json(trainer: pl.Trainer, data: Any, name: str, artifact_path: str | None = None) -> None:
    """Write ``data`` as an indented JSON artifact."""
    log_text(trainer, json.dumps(data, indent=2, default=str), name, artifact_path)


def log_figure(trainer: pl.Trainer, figure: Any, name: str, artifact_path: str | None = None) -> None:
    """Save a matplotlib figure (a plain `Figure`, not pyplot-managed: nothing to close) as a PNG artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / name
        figure.savefig(file, dpi=100, bbox_inches="tight")
        log_artifact_file(trainer, file, artifact_path)


def _check_sqlite_file(uri: str, path: Path) -> None:
    """The SQLite store's folder exists, and the folder (SQLite writes its journal there) and the file are writable."""
    folder = path.resolve().parent
    if not folder.is_dir():
        raise TrackingError(
            f"The MLflow store {uri} is a SQLite file in {folder}, which does not exist. Create "
            f"the folder first, or give another tracking URI, e.g. sqlite:///mlflow.db."
        )
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
        if path.exists():
            with path.open("r+b"):
                pass
    except OSError as err:
        raise TrackingError(
            f"The MLflow store {uri} cannot be written ({err.strerror or type(err).__name__}: "
            f"{err.filename or path}): SQLite needs to write both the file and its folder {folder}. Run from a "
            f"writable folder, or give a store in one with --trainer.logger.init_args.tracking_uri="
            f"sqlite:////writable/folder/mlflow.db."
        ) from err


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on a SQLite store while it is first opened (MLflow creates its tables then:
    two fits starting together in a fresh folder would both try, and one would fail). Other stores: no lock."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    lock_file = Path(tempfile.gettempdir()) / f"huscf-mlflow-{key}.lock"
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_store(uri: str, experiment_name: str | None = None, artifact_location: str | None = None) -> MlflowClient:
    """A client of the store, with its tables and (when named) the experiment created under `store_lock`, so
    that fits starting together neither create the tables twice nor the experiment twice."""
    with store_lock(uri):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
        if experiment_name is not None and client.get_experiment_by_name(experiment_name) is None:
            client.create_experiment(experiment_name, artifact_location=artifact_location)
    return client


def end_run_if_running(client: MlflowClient, run_id: str, status: str, tags: dict[str, str]) -> bool:
    """Mark a run that is still RUNNING as ended with ``status`` (e.g. KILLED) and tag why; True if it was
    (False also when the run is not in this store)."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
        return False
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, status)
    return True


def open_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of the active experiment ``name``, created when missing; a store that fails is a `TrackingError`."""
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "active":
            return experiment.experiment_id
        return client.create_experiment(name)
    except Exception as err:  # any store failure (bad path, refused connection, auth): one clear message
        raise TrackingError(
            f"Cannot open experiment {name!r} in the MLflow store {uri} ({type(err).__name__}: {err}). Check the "
            f"tracking URI (e.g. sqlite:///mlflow.db in an existing folder, or a running server)."
        ) from err
