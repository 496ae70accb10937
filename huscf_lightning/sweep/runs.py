"""The sweep's MLflow records: the sweep run (reused when a study resumes), one child run per trial,
ended with the trial's state, and the front logged to the sweep run."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from .fit_config import format_value
from .report import front_figure, front_rows, state_counts
from .spec import SweepSpec

log = logging.getLogger(__name__)


def now_ms() -> int:
    """MLflow's timestamp for a metric logged now."""
    return int(time.time() * 1000)


def sweep_run(client: MlflowClient, experiment_id: str, study: optuna.Study, spec: SweepSpec) -> str:
    """The sweep's MLflow run: the one this study used before when it is in this store, else a new one."""
    previous = study.user_attrs.get("mlflow_parent_run_id")
    if previous:
        try:
            run = client.get_run(previous)
        except MlflowException:
            run = None
        if run is not None and run.info.experiment_id == experiment_id:
            client.update_run(previous, status="RUNNING")
            log.info("resuming sweep run %s", previous)
            return previous
    run_id = _create_run(
        client, experiment_id, spec, f"sweep-{spec.study_name}",
        {"sweep.storage": spec.storage, "sweep.objectives": ",".join(spec.objectives)},
    )
    study.set_user_attr("mlflow_parent_run_id", run_id)
    return run_id


def trial_run(
    client: MlflowClient, experiment_id: str, parent_run_id: str, spec: SweepSpec, trial: optuna.Trial,
    sampled: Mapping[str, Any],
) -> str:
    """A child run of the sweep run for ``trial``, its sampled values logged as params."""
    run_id = _create_run(
        client, experiment_id, spec, f"{spec.study_name}-trial-{trial.number}",
        {MLFLOW_PARENT_RUN_ID: parent_run_id, "sweep.trial": str(trial.number)},
    )
    trial.set_user_attr("mlflow_run_id", run_id)
    if sampled:
        client.log_batch(run_id, params=[Param(k, format_value(v)) for k, v in sampled.items()])
    return run_id


def end_trial_run(client: MlflowClient, run_id: str, status: int, state: str, error: str | None = None) -> None:
    """Terminate a trial's run with its MLflow status, its Optuna state as a tag, and the error if any."""
    client.set_tag(run_id, "sweep.state", state)
    if error is not None:
        client.set_tag(run_id, "sweep.error", error[:5000])
    client.set_terminated(run_id, RunStatus.to_string(status))


def log_front(client: MlflowClient, run_id: str, study: optuna.Study, objectives: Sequence[str]) -> None:
    """The front (JSON and PNG) and the counts of complete, failed and pruned trials, on the sweep run."""
    client.log_dict(run_id, front_rows(study, objectives), "pareto_front.json")
    client.log_figure(run_id, front_figure(study, objectives), "pareto_front.png")
    trials = study.get_trials(deepcopy=False)
    client.log_batch(run_id, metrics=[
        Metric(f"sweep/{state.name.lower()}_trials", count, now_ms(), len(trials))
        for state, count in state_counts(trials).items()
    ])


def _create_run(client: MlflowClient, experiment_id: str, spec: SweepSpec, name: str, tags: Mapping[str, str]) -> str:
    run = client.create_run(experiment_id, run_name=name, tags={"sweep.study": spec.study_name, **tags})
    return run.info.run_id
