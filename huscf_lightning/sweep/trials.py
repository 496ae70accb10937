"""The objective Optuna calls: one fit run per trial, recorded as a child of the sweep run, and the
objective values read back from that run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import optuna
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

from huscf_lightning.cli.lightning_cli import run_cli
from huscf_lightning.engine.module import HuSCFGAN

from .errors import TrialError
from .fit_config import LOGGER_ARGS
from .prepare import PreparedSweep
from .pruning import RoundPruning
from .runs import end_trial_run, now_ms, trial_run
from .search_space import sample
from .spec import SweepSpec


def objective_values(objectives: Sequence[str], metrics: Mapping[str, float], model: HuSCFGAN) -> dict[str, float]:
    """Each objective of a finished trial: the mean over domains of the final eval metric, or the plan's latency."""
    values = {}
    for name in objectives:
        if name == "latency":
            values[name] = model.plan_report["latency_s"]
            continue
        keys = [f"eval/{name}/{domain}" for domain in model.domain_names]
        missing = [k for k in keys if k not in metrics]
        if missing:
            raise TrialError(
                f"The trial logged no {missing}; the {name} objective needs {name!r} in model.evaluation.metrics."
            )
        values[name] = sum(metrics[k] for k in keys) / len(keys)
    return values


@dataclass
class Trials:
    """The objective Optuna calls: one fit run per trial, recorded as a child of the sweep run."""

    spec: SweepSpec
    prepared: PreparedSweep
    client: MlflowClient
    experiment_id: str
    parent_run_id: str

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        sampled = sample(self.spec.search_space, self.spec.fixed, trial)
        run_id = trial_run(self.client, self.experiment_id, self.parent_run_id, self.spec, trial, sampled)
        prepared = self.prepared
        logger = {"tracking_uri": prepared.tracking_uri, "experiment_name": prepared.experiment_name, "run_id": run_id}
        overrides = {**prepared.fixed, **sampled, **{f"{LOGGER_ARGS}.{k}": v for k, v in logger.items()}}
        args = prepared.fit.arguments(overrides)
        monitor = self.spec.pruning_monitor
        callbacks = [RoundPruning(trial, monitor, prepared.every_n_rounds)] if monitor else []
        try:
            values = self._fit(args, run_id, callbacks)
        except optuna.TrialPruned:
            end_trial_run(self.client, run_id, RunStatus.KILLED, "PRUNED")
            raise
        except BaseException as err:
            error = f"{type(err).__name__}: {err}"
            trial.set_user_attr("error", error[:2000])
            end_trial_run(self.client, run_id, RunStatus.FAILED, "FAIL", error)
            raise
        self.client.log_batch(run_id, metrics=[Metric(f"objective/{k}", v, now_ms(), 0) for k, v in values.items()])
        end_trial_run(self.client, run_id, RunStatus.FINISHED, "COMPLETE")
        result = tuple(values[o] for o in self.spec.objectives)
        return result if len(result) > 1 else result[0]

    def _fit(self, args: list[str], run_id: str, callbacks: list[pl.Callback]) -> dict[str, float]:
        try:
            cli = run_cli(["fit", *self.prepared.fit.base_args, *args], extra_callbacks=callbacks)
        except SystemExit as exit_:  # the fit parser exits on a value it rejects: a failed trial, not the sweep's end
            raise TrialError(f"The fit command rejected the trial's arguments (exit {exit_.code}): {args}") from exit_
        metrics = self.client.get_run(run_id).data.metrics
        return objective_values(self.spec.objectives, metrics, cli.model)
