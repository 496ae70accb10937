"""MLflow record of a run: thin helpers over Lightning's MLFlowLogger for artifacts and round metrics.

Every callback logs through these, so a run without an MLflow logger (a unit test, a user's own
logger) still trains: the helpers then do nothing beyond a debug message.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning.pytorch as pl
import requests
import torch
from lightning.pytorch.loggers import MLFlowLogger

from huscf_lightning.errors import HuSCFError

log = logging.getLogger(__name__)


class TrackingError(HuSCFError, ValueError):
    """An MLflow store that cannot be used; the message names the fix."""


def check_tracking_uri(uri: str) -> None:
    """Fail fast on a store MLflow cannot use: a server that does not answer (MLflow itself would
    retry for minutes) or a SQLite file whose folder does not exist (a deep SQLAlchemy error)."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
        if path is not None and str(path) != ":memory:" and not path.resolve().parent.is_dir():
            raise TrackingError(
                f"The MLflow store {uri} is a SQLite file in {path.resolve().parent}, which does not exist. Create "
                f"the folder first, or give another tracking URI, e.g. sqlite:///mlflow.db."
            )
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
