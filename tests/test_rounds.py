"""Round callbacks and federation strategies as a user extends them: one subclass each, no knowledge of the
built-in callbacks' order, selectable from the config."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from huscf_lightning.callbacks import FederatedAggregation, RoundCallback, ordered_round_callbacks
from huscf_lightning.cli.lightning_cli import run_cli
from huscf_lightning.config import ConfigError, FederationSpec
from huscf_lightning.federation import FederationStrategy, build_strategy, fedavg_aggregation, register_strategy
from huscf_lightning.federation.rounds import RoundState

TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")
QUIET = ["--model.evaluation.utility_samples=0", "--model.evaluation.sample_grids=false", "--trainer.logger=false"]


class EveryOtherRound(RoundCallback):
    """The README's example: something logged every 2 rounds, after the round is aggregated and scored."""

    def __init__(self) -> None:
        super().__init__(every_n_rounds=2)

    def on_round_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round: RoundState) -> None:
        self.history.append({
            "round": round.index,
            "aggregated": round.weights.get("G") is not None,
            "score_mean": round.metrics.get("eval/score_mean"),
            "server_weights": round.weights["G"].server_matrix[0].tolist(),
        })


@register_strategy
class EqualWeights(FederationStrategy):
    """The README's example strategy: every client counts the same, whatever its dataset size."""

    name = "equal_weights"

    def aggregate(self, round: RoundState, sizes: torch.Tensor) -> object:
        return fedavg_aggregation(torch.ones_like(sizes))


def test_a_user_round_callback_acts_every_second_round_after_aggregation_and_evaluation(tmp_path: Path) -> None:
    mine = EveryOtherRound()  # first in the trainer's list: the stage, not the position, decides when it acts
    cli = run_cli(["fit", "--config", TINY, *QUIET, "--model.rounds=4", "--model.evaluation.num_samples=50",
                   f"--trainer.default_root_dir={tmp_path}"], extra_callbacks=[mine])
    assert [row["round"] for row in mine.history] == [2, 4]
    assert all(row["aggregated"] and row["score_mean"] is not None for row in mine.history)
    order = [type(c).__name__ for c in ordered_round_callbacks(cli.trainer.callbacks)]
    assert order.index("FederatedAggregation") < order.index("GenerationEvaluation") < order.index("EveryOtherRound")
    assert cli.trainer.callbacks.index(mine) < cli.trainer.callbacks.index(
        next(c for c in cli.trainer.callbacks if isinstance(c, FederatedAggregation))
    )


def test_a_strategy_is_one_class_selected_by_name_or_class_path(tmp_path: Path) -> None:
    sizes = [10, 30, 60]
    round_state = RoundState(3, ["a", "a", "b"], sizes)
    weights = build_strategy(FederationSpec(mode="equal_weights", warmup_rounds=0)).weights(round_state)
    assert weights.server_matrix[0].tolist() == pytest.approx([1 / 3] * 3)
    warm = build_strategy(FederationSpec(mode="equal_weights", warmup_rounds=3)).weights(round_state)
    assert warm.server_matrix[0].tolist() == pytest.approx([0.1, 0.3, 0.6])  # warm-up rounds are FedAvg

    mine = EveryOtherRound()
    cli = run_cli(["fit", "--config", TINY, *QUIET, "--model.evaluation.metrics=[]", "--model.rounds=2",
                   "--model.federation.mode=test_rounds.EqualWeights", "--model.federation.warmup_rounds=0",
                   f"--trainer.default_root_dir={tmp_path}"], extra_callbacks=[mine])
    assert isinstance(cli.model.strategy, EqualWeights)
    assert not any(type(c).__name__ == "ClusteringRound" for c in cli.trainer.callbacks)  # it needs no clusters
    (row,) = mine.history
    assert row["server_weights"] == pytest.approx([0.25] * 4)
    aggregation = next(c for c in cli.trainer.callbacks if isinstance(c, FederatedAggregation))
    assert [r["mode"] for r in aggregation.history] == ["equal_weights", "equal_weights"]


def test_an_unknown_strategy_or_stage_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="Unknown federation mode 'fedprox'.*fedavg, clustered, kld_clustered"):
        FederationSpec(mode="fedprox").validate()
    with pytest.raises(ConfigError, match="cannot be imported"):
        FederationSpec(mode="nowhere.Strategy").validate()
    with pytest.raises(ConfigError, match="not a FederationStrategy subclass"):
        FederationSpec(mode="torch.nn.Linear").validate()

    class Misplaced(RoundCallback):
        stage = "after_everything"

    with pytest.raises(ConfigError, match="stage is 'after_everything'"):
        ordered_round_callbacks([Misplaced()])
