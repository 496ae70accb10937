"""RoundCallback: the base of every callback that acts at a round end, and the one place their order is set.

A round is ``local_epochs`` epochs. At the end of its last epoch the module opens a `RoundState` and
calls `run_round_end`, which runs every `RoundCallback` on the trainer in the order of `ROUND_STAGES`
(callbacks of one stage in the trainer's order). A callback says where it belongs with its ``stage``;
a user's own round callback needs nothing more than ``on_round_end`` and acts after the built-in ones
(stage ``report``: the round's weights are aggregated and its scores computed by then).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import lightning.pytorch as pl

from huscf_lightning.collectives import broadcast_object, world_size
from huscf_lightning.errors import ConfigError
from huscf_lightning.federation.rounds import RoundState

# The order in which round callbacks act at a round end.
ROUND_STAGES = (
    "cluster",  # who is grouped with whom
    "aggregate",  # clients and server load their averages (the weights they exchange cross the wire)
    "exchange",  # what crossed the wire this round, the aggregation's weights included
    "evaluate",  # scores, samples and the utility test of the aggregated generators
    "report",  # everything that reads the above: pruning, user callbacks
)


class RoundCallback(pl.Callback):
    """Acts at round ends: override `on_round_end`. ``every_n_rounds``: act on rounds n, 2n, ... only.

    ``history`` (a list of JSON-able records) survives checkpoints; `state_dict`/`load_state_dict`
    cover it, so a subclass that keeps more overrides them. ``every_rank``: in a run sharded over
    processes, whether it acts on every rank (it takes part in collectives, or its result is needed
    everywhere) or on rank 0 only (evaluation: once, its ``round.metrics`` then reach every rank).
    """

    stage: ClassVar[str] = "report"
    every_rank: ClassVar[bool] = True

    def __init__(self, every_n_rounds: int = 1) -> None:
        if every_n_rounds < 1:
            raise ConfigError(f"{type(self).__name__}: every_n_rounds must be >= 1; got {every_n_rounds}.")
        self.every_n_rounds = every_n_rounds
        self.history: list[dict] = []

    def acts_on(self, round: RoundState) -> bool:
        """Whether this callback acts at the end of ``round``: every ``every_n_rounds``-th round."""
        return round.index % self.every_n_rounds == 0

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        """What to do at the end of a round; ``round`` carries what earlier stages found."""

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict["history"])


def ordered_round_callbacks(callbacks: Iterable[pl.Callback]) -> list[RoundCallback]:
    """The round callbacks among ``callbacks``, in stage order (stable within a stage)."""
    found = [c for c in callbacks if isinstance(c, RoundCallback)]
    for callback in found:
        if callback.stage not in ROUND_STAGES:
            raise ConfigError(
                f"{type(callback).__name__}.stage is {callback.stage!r}; a round callback's stage is one of "
                f"{', '.join(ROUND_STAGES)} (leave it unset to act after the built-in callbacks)."
            )
    return sorted(found, key=lambda c: ROUND_STAGES.index(c.stage))


def run_round_end(trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
    """Run every round callback of ``trainer`` that acts on this round, in stage order. In a sharded run the
    rank-0-only ones act on rank 0, and the round's metrics go from rank 0 to every rank before the report
    stage (a pruning decision must be the same everywhere)."""
    sharded = world_size() > 1
    shared_metrics = False
    for callback in ordered_round_callbacks(trainer.callbacks):
        if sharded and not shared_metrics and ROUND_STAGES.index(callback.stage) > ROUND_STAGES.index("evaluate"):
            round.metrics = broadcast_object(round.metrics)
            shared_metrics = True
        if callback.acts_on(round) and (callback.every_rank or trainer.is_global_zero):
            callback.on_round_end(trainer, pl_module, round)
