"""Optuna pruning at round ends: HuSCFGAN has no validation loop, so a trial reports each round's metric."""

from __future__ import annotations

import lightning.pytorch as pl
import optuna
from optuna_integration import PyTorchLightningPruningCallback

from .errors import SweepError, TrialError


class RoundPruning(PyTorchLightningPruningCallback):
    """Optuna pruning at round ends (HuSCFGAN has no validation loop), reported with step = round."""

    def __init__(self, trial: optuna.Trial, monitor: str, every_n_rounds: int = 1) -> None:
        super().__init__(trial, monitor)
        self.every_n_rounds = every_n_rounds

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning runs the model's own callbacks (the evaluation among them) after the trainer's:
        # go last, so the round's metric is already in callback_metrics when this one reads it.
        trainer.callbacks = [c for c in trainer.callbacks if c is not self] + [self]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        if self.is_ddp_backend:
            raise SweepError("Pruning sweeps run each trial in one process; set trainer.devices=1 (or drop pruning).")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Rounds are reported at their end instead (there is no validation loop)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.is_round_end(trainer) or pl_module.current_round % self.every_n_rounds:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise TrialError(
                f"Pruning monitors {self.monitor!r}, which the run did not log; enable it in model.evaluation.metrics."
            )
        round_index = pl_module.current_round
        self._trial.report(float(value), step=round_index)
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"Trial pruned at round {round_index} ({self.monitor} = {float(value):.4f}).")
