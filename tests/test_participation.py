"""Partial participation: who takes part is seeded, only participants train and are aggregated, the others
keep their cluster's model in the client store, and a run resumes exactly."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from mlflow.tracking import MlflowClient

from huscf_lightning.callbacks import ClusteringRound, FederatedAggregation
from huscf_lightning.callbacks.round import RoundCallback
from huscf_lightning.cli.lightning_cli import run_cli
from huscf_lightning.config import ConfigError, EvaluationSpec, FederationSpec, PlanSpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.federation.participation import clients_per_round, draw_participants
from huscf_lightning.split.client_store import ClientStore, ClientStoreError

TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")
QUIET = EvaluationSpec(metrics=[], utility_samples=0, sample_grids=False)


# ------------------------------------------------------------------------------------------ the draw
def test_clients_per_round_reads_a_fraction_or_a_count() -> None:
    assert clients_per_round(1000, 0.1) == 100
    assert clients_per_round(10, 0.25) == 3  # 2.5 rounds up
    assert clients_per_round(10, 0.01) == 1  # at least one client
    assert clients_per_round(10, 1.0) == 10
    assert clients_per_round(10, 4) == 4
    with pytest.raises(ConfigError, match="at most 10"):
        clients_per_round(10, 11)


def test_a_seed_gives_the_same_participants_and_rounds_differ() -> None:
    draws = [draw_participants(50, 0.2, seed=3, round_index=r) for r in (1, 2, 3)]
    assert draws == [draw_participants(50, 0.2, seed=3, round_index=r) for r in (1, 2, 3)]
    assert all(len(d) == 10 and list(d) == sorted(set(d)) for d in draws)
    assert len(set(draws)) == 3
    assert draws[0] != draw_participants(50, 0.2, seed=4, round_index=1)
    assert draw_participants(50, 1.0, seed=3, round_index=1) == tuple(range(50))


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5, float("nan")])
def test_an_impossible_participation_is_a_config_error(share: float) -> None:
    with pytest.raises(ConfigError, match="federation.participation"):
        FederationSpec(participation=share).validate()


def test_a_strategy_that_needs_every_client_refuses_partial_participation() -> None:
    model = HuSCFGAN(federation=FederationSpec(mode="md_gan", participation=0.5), rounds=1, local_epochs=1)
    with pytest.raises(ConfigError, match="needs every client in every round"):
        model.configure_clients(["digits"] * 4, [16] * 4)


# ------------------------------------------------------------------------------------------ the store
def _model(value: float) -> dict:
    return {(0, "w"): torch.full((2,), value)}


def test_the_store_keeps_clusters_by_membership_and_drops_unused_models() -> None:
    store = ClientStore(_model(0.0), 6)
    store.update([0, 2, 4], torch.tensor([0, 1, 0]), [_model(1.0), _model(2.0)])
    # 0 and 4 joined group 0, 2 group 1; the others shared slot 0 with them and follow the majority: group 0
    assert [float(store.client_state(c)[(0, "w")][0]) for c in range(6)] == [1, 1, 2, 1, 1, 1]
    store.update([1, 2], torch.tensor([0, 1]), [_model(3.0), _model(4.0)])
    # client 1 (from the model 1 cluster) took part: its cluster-mates 0, 3, 4, 5 receive its new model
    assert [float(store.client_state(c)[(0, "w")][0]) for c in range(6)] == [3, 3, 4, 3, 3, 3]
    assert len(store.slots) == 2  # models 0, 1 and 2 are held by nobody any more
    store.update([5], torch.tensor([0]), [_model(5.0)])
    assert [float(store.client_state(c)[(0, "w")][0]) for c in range(6)] == [5, 5, 4, 5, 5, 5]
    saved = store.state_dict()
    restored = ClientStore(_model(0.0), 6)
    restored.load_state_dict(saved)
    assert torch.equal(restored.slot_of, store.slot_of) and restored.slots.keys() == store.slots.keys()
    with pytest.raises(ClientStoreError, match="same networks, plan and data"):
        ClientStore(_model(0.0), 7).load_state_dict(saved)


def test_a_round_without_aggregation_gives_each_participant_its_own_model() -> None:
    store = ClientStore(_model(0.0), 3)
    store.update([0, 2], torch.arange(2), [_model(1.0), _model(2.0)], follow=False)
    assert [float(store.client_state(c)[(0, "w")][0]) for c in range(3)] == [1, 0, 2]


# ------------------------------------------------------------------------------------------ a fit
class Snapshots(RoundCallback):
    """Every client's own state at each round's first step and at its end, before the aggregation."""

    stage = "cluster"

    def __init__(self) -> None:
        super().__init__()
        self.start: list[list[dict]] = []
        self.end: list[list[dict]] = []
        self.rounds: list[list[int]] = []
        self.epoch_start = _AtFirstStep(self.start)

    def on_round_end(self, trainer, pl_module, round) -> None:
        self.end.append(_all_clients(pl_module))
        self.rounds.append(list(round.clients))


class _AtFirstStep(pl.Callback):
    def __init__(self, into: list) -> None:
        self.into = into

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.into.append(_all_clients(pl_module))


def _all_clients(model: HuSCFGAN) -> list[dict]:
    return [
        {(net.name, *key): t.detach().clone() for net in (model.G, model.D) for key, t in net.client_state(c).items()}
        for c in range(model.num_clients)
    ]


def _same(a: dict, b: dict) -> bool:
    """Equal on every tensor both hold (clients with other cuts hold other blocks)."""
    return all(torch.equal(a[k], b[k]) for k in a.keys() & b.keys())


def test_only_participants_train_and_the_others_receive_their_clusters_model(tmp_path) -> None:
    snapshots = Snapshots()
    model = HuSCFGAN(
        plan=PlanSpec(source="random"),
        federation=FederationSpec(mode="kld_clustered", warmup_rounds=1, participation=0.5),
        evaluation=QUIET, rounds=2, local_epochs=1, seed=2,
    )
    data = HuSCFDataModule([DomainSpec("digits", 3), DomainSpec("glyphs", 3)], batch_size=8, cap=16)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, callbacks=[snapshots, snapshots.epoch_start])
    trainer.fit(model, data)
    drawn = [list(draw_participants(6, 0.5, 2, r)) for r in (1, 2)]
    assert snapshots.rounds == drawn and all(len(d) == 3 for d in drawn)
    for r in range(2):
        for client in range(6):
            changed = not _same(snapshots.start[r][client], snapshots.end[r][client])
            assert changed == (client in drawn[r]), (r, client)
    # round 1 is FedAvg over the participants; every client shared the initial model, so all six hold the average
    assert all(_same(snapshots.start[1][c], snapshots.start[1][0]) for c in range(6))
    assert all(snapshots.start[1][c].keys() & snapshots.start[1][0].keys() for c in range(6))  # block 0 at least
    (aggregation,) = [c for c in trainer.callbacks if isinstance(c, FederatedAggregation)]
    assert [r["participants"] for r in aggregation.history] == drawn
    assert all(len(r["groups"]) == len(r["client_weights"]) == 3 for r in aggregation.history)
    (clustering,) = [c for c in trainer.callbacks if isinstance(c, ClusteringRound)]
    assert [len(r["clusters"]) for r in clustering.history] == [3, 3]  # k-means over the participants only
    # the clients of round 2 were resident at the end; the store holds at most one model per group and round
    assert model.G.resident == tuple(drawn[1]) and len(model.G.store.slots) <= 2 * 3
    assert model.generate(next(c for c in range(6) if c not in drawn[1]), torch.arange(3)).shape == (3, 1, 28, 28)


def _fit(tmp: Path, *args: str):
    return run_cli(["fit", "--config", TINY, "--trainer.deterministic=true", f"--trainer.default_root_dir={tmp}",
                    "--model.evaluation.metrics=[]", "--model.evaluation.utility_samples=0",
                    "--model.evaluation.sample_grids=false", "--model.federation.participation=0.5", *args])


def _final_state(cli) -> dict[str, torch.Tensor]:
    model = cli.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for net in (model.G, model.D):
        saved = net.store.state_dict()
        state[f"{net.name}.slot_of"] = saved["slot_of"]
        for slot, tensors in saved["slots"].items():
            state.update({f"{net.name}.slot{slot}.{i}": t for i, t in enumerate(tensors)})
    return state


def test_partial_participation_resumes_exactly_and_is_logged_per_round(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    full = _fit(tmp_path / "full", "--model.rounds=3", f"--trainer.logger.init_args.tracking_uri={uri}")
    part = _fit(tmp_path / "part", "--model.rounds=2", "--trainer.logger=false")
    resumed = _fit(tmp_path / "resumed", "--model.rounds=3", "--trainer.logger=false",
                   f"--ckpt_path={part.trainer.checkpoint_callback.last_model_path}")
    expected, got = _final_state(full), _final_state(resumed)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
    logged = MlflowClient(uri).get_metric_history(full.trainer.logger.run_id, "federation/participants")
    assert [m.value for m in logged] == [2, 2, 2]  # 0.5 of the 4 clients, every round


def test_a_checkpoint_of_the_per_module_layout_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = _fit(tmp_path / "run", "--model.rounds=1", "--trainer.logger=false", "--model.federation.participation=1.0")
    checkpoint = torch.load(cli.trainer.checkpoint_callback.last_model_path, weights_only=False)
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith("G.client_stacks.")]:
        state[key.replace("G.client_stacks.", "G.client_blocks.0.")] = state.pop(key)[0]
    del checkpoint["huscf"]["layout"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.raises(ConfigError, match="kept a module per client") as caught:
        HuSCFGAN.load_from_checkpoint(old)
    assert "start a new run" in str(caught.value)
