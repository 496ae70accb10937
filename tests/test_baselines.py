"""The baselines the paper compares against, each checked against what it is: FedGAN averages whole
networks, local training never aggregates, MD-GAN sends only generated batches and swaps discriminators,
centralized training is one unsplit cGAN step on the clients' batches together."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import torch
from cgan_reference import assert_same_state, cgan_step

from huscf_lightning.callbacks import RoundCallback
from huscf_lightning.config import EvaluationSpec, FederationSpec, PlanSpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.federation.strategy import discriminator_swap
from huscf_lightning.split.wire import Crossing, Wire

QUIET = EvaluationSpec(metrics=[], utility_samples=0, sample_grids=False)


class BeforeAggregation(RoundCallback):
    """Every client's own G and D state as the round ends, before the aggregation touches it."""

    stage = "cluster"

    def on_round_end(self, trainer, pl_module, round) -> None:
        self.G = [_own_state(pl_module.G, client) for client in range(pl_module.num_clients)]
        self.D = [_own_state(pl_module.D, client) for client in range(pl_module.num_clients)]


def _own_state(net, client: int) -> dict:
    """Copies of every tensor of the blocks ``client`` holds itself, by (block, name)."""
    return {key: t.detach().clone() for key, t in net.client_state(client).items()}


class FirstBatch(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.batch = [(x.clone(), y.clone()) for x, y in batch]


def _fit(mode: str, domains: list[DomainSpec], tmp_path, callbacks=(), wire: Wire | None = None, max_steps: int = -1,
         batch_size: int = 8, cap: int | None = 48, seed: int = 0) -> tuple[HuSCFGAN, HuSCFDataModule]:
    model = HuSCFGAN(federation=FederationSpec(mode=mode, warmup_rounds=0), evaluation=QUIET, rounds=1, local_epochs=1,
                     plan=PlanSpec(source="random"), seed=seed)
    if wire is not None:
        model.wire = wire
    data = HuSCFDataModule(domains, batch_size=batch_size, cap=cap, seed=seed)
    trainer = pl.Trainer(max_epochs=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path, callbacks=list(callbacks))
    trainer.fit(model, data)
    return model, data


def test_fedgan_every_client_ends_a_round_with_the_size_weighted_average_of_whole_networks(tmp_path) -> None:
    before = BeforeAggregation()
    model, data = _fit("fedgan", [DomainSpec("digits", 2, "noniid"), DomainSpec("glyphs", 2, "noniid")], tmp_path, [before])
    sizes = torch.tensor(data.client_sizes, dtype=torch.float64)
    assert len(set(data.client_sizes)) > 1  # unequal sizes, so size weighting is visible
    assert len(model.G.server_blocks) == 0 and len(model.D.server_blocks) == 0  # no server compute
    for name, net, states in (("G", model.G, before.G), ("D", model.D, before.D)):
        for key in states[0]:
            if not states[0][key].is_floating_point():
                continue
            by_hand = sum(float(n) * s[key].double() for n, s in zip(sizes, states)) / sizes.sum()
            for client in range(4):
                after = net.client_state(client)[key]
                torch.testing.assert_close(after.double(), by_hand, rtol=1e-5, atol=1e-6, msg=f"{name} {key} client {client}")
    assert (model.plan.placement, model.plan_report["method"]) == ("client", "client")
    assert model.plan_report["latency_s"] > 0


def test_local_training_never_aggregates(tmp_path) -> None:
    before = BeforeAggregation()
    model, _ = _fit("local", [DomainSpec("digits", 2), DomainSpec("glyphs", 2)], tmp_path, [before])
    for net, states in ((model.G, before.G), (model.D, before.D)):
        for client, state in enumerate(states):
            for key, value in net.client_state(client).items():
                assert torch.equal(value, state[key]), key
    assert model.wire.total() == 0  # nothing crosses, not even weights


class RecordingWire(Wire):
    """The in-process wire, keeping what crossed (the test checks none of it is real data)."""

    def __init__(self) -> None:
        super().__init__()
        self.carried: list[tuple[Crossing, bool, torch.Tensor]] = []
        self.accounted: list[tuple[int, str, str, str]] = []

    def account(self, client: int, cut: str, direction: str, nbytes: int, kind: str) -> None:
        self.accounted.append((client, cut, direction, kind))
        super().account(client, cut, direction, nbytes, kind)

    def transport(self, tensor: torch.Tensor, crossing: Crossing, gradient: bool) -> torch.Tensor:
        self.carried.append((crossing, gradient, tensor.detach().clone()))
        return super().transport(tensor, crossing, gradient)


def test_md_gan_sends_only_generated_batches_and_their_gradients_and_swaps_discriminators(tmp_path) -> None:
    wire, before, first = RecordingWire(), BeforeAggregation(), FirstBatch()
    model, _ = _fit("md_gan", [DomainSpec("digits", 2), DomainSpec("glyphs", 2)], tmp_path, [before, first], wire=wire,
                    seed=5)
    assert len(model.G.client_stacks) == 0 and len(model.D.server_blocks) == 0  # G on the server, D on the clients
    crossings = {(c.cut, c.direction, gradient) for c, gradient, _ in wire.carried}
    assert crossings == {("G.out", "down", False), ("G.out", "up", True)}  # images down, their gradients up
    for crossing, gradient, tensor in wire.carried:
        assert tensor.shape[1:] == (1, 28, 28) and tensor.is_floating_point()
    reals = [x for x, _ in first.batch]
    first_step = [t for c, g, t in wire.carried[:4]]
    assert not any(torch.equal(t, x) for t in first_step for x in reals)  # generated, not the clients' images
    # besides: the labels the server drew (server -> client only) and the discriminators' swap at the round end
    assert {(cut, direction, kind) for _, cut, direction, kind in wire.accounted} == {
        ("G.labels", "down", "synthetic labels"), ("D.weights", "up", "weights"), ("D.weights", "down", "weights")}

    swap = discriminator_swap(4, 5, 1).client_matrix.argmax(dim=1)
    assert not bool((swap == torch.arange(4)).any())
    for client in range(4):
        for key, value in model.D.client_state(client).items():
            assert torch.equal(value, before.D[int(swap[client])][key]), (client, key)


def test_centralized_step_equals_the_unsplit_cgan_step_on_the_clients_batches_together(tmp_path) -> None:
    first = FirstBatch()
    model = HuSCFGAN(federation=FederationSpec(mode="centralized"), evaluation=QUIET, rounds=1, local_epochs=1, seed=3,
                     lr_g=1e-3, lr_d=5e-4, betas=(0.4, 0.99))
    G, D = copy.deepcopy(model.generator_template), copy.deepcopy(model.discriminator_template)
    # 4 clients of 8: the batch mean's 1/32 is exact in float, so the step is the reference's to the rounding
    data = HuSCFDataModule([DomainSpec("digits", 2), DomainSpec("glyphs", 2)], batch_size=8, cap=32, seed=3)
    trainer = pl.Trainer(max_epochs=1, max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, callbacks=[first])
    trainer.fit(model, data)
    x = torch.cat([x for x, _ in first.batch])
    y = torch.cat([y for _, y in first.batch])
    z = torch.randn(len(y), 100, generator=torch.Generator().manual_seed(3))
    cgan_step(G, D, x, y, z, lr_g=1e-3, lr_d=5e-4, betas=(0.4, 0.99))
    for name, split, unsplit in (("G", model.G, G), ("D", model.D, D)):
        assert_same_state(split.client_path(0).state_dict(), unsplit, name)
    (exchange,) = [c for c in trainer.callbacks if type(c).__name__ == "CutLayerExchange"]
    assert exchange.history[0]["wire/data/up"] == sum(  # the clients' data, uploaded once, is what crosses
        imgs.numel() * imgs.element_size() + labels.numel() * labels.element_size()
        for imgs, labels in (data.client_data(i) for i in range(4))
    )
