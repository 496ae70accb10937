"""Optuna pruning at round ends: HuSCFGAN has no validation loop, so a trial reports each round's metric."""

from __future__ import annotations

import lightning.pytorch as pl
import optuna
from optuna_integration import PyTorchLightningPruningCallback

from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.federation.rounds import RoundState

from .errors import SweepError, TrialError


class RoundPruning(RoundCallback, PyTorchLightningPruningCallback):
    """Optuna pruning at round ends, reported with step = round.

    A round callback of the last stage (``report``), so the round's evaluation has run when it reads the metric.
    """

    def __init__(self, trial: optuna.Trial, monitor: str, every_n_rounds: int = 1) -> None:
        PyTorchLightningPruningCallback.__init__(self, trial, monitor)
        RoundCallback.__init__(self, every_n_rounds)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        if self.is_ddp_backend:
            raise SweepError("Pruning sweeps run each trial in one process; set trainer.devices=1 (or drop pruning).")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Rounds are reported at their end instead (there is no validation loop)."""

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        value = round.metrics.get(self.monitor, trainer.callback_metrics.get(self.monitor))
        if value is None:
            raise TrialError(
                f"Pruning monitors {self.monitor!r}, which the run did not log; enable it in model.evaluation.metrics."
            )
        self._trial.report(float(value), step=round.index)
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"Trial pruned at round {round.index} ({self.monitor} = {float(value):.4f}).")
