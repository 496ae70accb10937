"""RunRecord: what a run was, written to MLflow before it trains (plan, cut selection, partition, tags)."""

from __future__ import annotations

import csv
import io
import subprocess

import lightning.pytorch as pl

from huscf_lightning.engine.tracking import end_run_if_running, log_json, log_round_metrics, log_text, mlflow_logger


def git_commit() -> str | None:
    """The commit of the working tree the run started from, when there is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


class RunRecord(pl.Callback):
    """Logs the split plan, the GA's report and modeled latency, the data partition and run tags.

    A resumed fit logs them too (it usually lands in a new MLflow run), tagged with the run it
    continues (``resumed_from_run``) and the round it starts from (``resumed_at_round``). A continued
    run still marked RUNNING had its process killed (a run that ends, even by Ctrl-C, is marked so):
    it is marked KILLED, tagged ``resumed_by_run``.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:  # a run sharded over processes: rank 0 holds the MLflow run
            return
        log_json(trainer, pl_module.plan.to_dict(), "plan.json")
        tags = {
            "plan_source": pl_module.plan_spec.source,
            "federation_mode": pl_module.federation.mode,
            "placement": pl_module.plan.placement,
            "shares": pl_module.strategy.shares,  # what leaves a client while training (MD-GAN: synthetic data)
            "domains": ",".join(pl_module.domain_names),
            "num_clients": str(pl_module.num_clients),
        }
        if pl_module.plan_report is not None:
            log_json(trainer, pl_module.plan_report, "cut_selection.json")
            log_round_metrics(trainer, {"plan/latency_s": pl_module.plan_report["latency_s"]}, 0)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "partition_rows"):
            rows = datamodule.partition_rows()
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            log_text(trainer, buffer.getvalue(), "partition.csv")
            tags["scenario"] = datamodule.scenario_name
        commit = git_commit()
        if commit:
            tags["git_commit"] = commit
        _set_tags(trainer, tags)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The link to the run a resumed fit continues (the epoch counter is restored only by now)."""
        previous = pl_module.resumed_from_run
        if previous is None or not trainer.is_global_zero:
            return
        _set_tags(trainer, {"resumed_from_run": previous, "resumed_at_round": str(pl_module.current_round)})
        logger = mlflow_logger(trainer)
        if logger is not None and previous != logger.run_id:
            end_run_if_running(logger.experiment, previous, "KILLED", {"resumed_by_run": logger.run_id})


def _set_tags(trainer: pl.Trainer, tags: dict[str, str]) -> None:
    logger = mlflow_logger(trainer)
    if logger is not None:
        for key, value in tags.items():
            logger.experiment.set_tag(logger.run_id, key, value)
