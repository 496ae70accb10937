"""One HuSCFGAN iteration is METHOD.md's: the cGAN step (D on fakes and reals, D step, then G through D) and
the clustering features it leaves for the round end."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import torch
from cgan_reference import assert_same_state, cgan_step

from huscf_lightning.callbacks import ClusteringRound
from huscf_lightning.config import EvaluationSpec, FederationSpec, PlanSpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN


class FirstBatch(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.batch = [(x.clone(), y.clone()) for x, y in batch]


def test_one_client_step_equals_a_hand_written_unsplit_cgan_step(tmp_path) -> None:
    model = HuSCFGAN(
        plan=PlanSpec(source="explicit", cuts=[[2, 1, 1, 2]]),
        federation=FederationSpec(mode="fedavg"),
        evaluation=EvaluationSpec(metrics=[], utility_samples=0, sample_grids=False),
        rounds=1,
        local_epochs=1,
        lr_g=1e-3,
        lr_d=5e-4,
        betas=(0.4, 0.99),
        seed=3,
    )
    G, D = copy.deepcopy(model.generator_template), copy.deepcopy(model.discriminator_template)
    data = HuSCFDataModule([DomainSpec("digits", 1)], batch_size=16, cap=32)
    first = FirstBatch()
    trainer = pl.Trainer(max_epochs=1, max_steps=2, logger=False, enable_checkpointing=False,  # one D and one G step
                         enable_progress_bar=False, default_root_dir=tmp_path, callbacks=[first])
    trainer.fit(model, data)

    (x, y), = first.batch
    z = torch.randn(len(y), 100, generator=torch.Generator().manual_seed(3))
    cgan_step(G, D, x, y, z, lr_g=1e-3, lr_d=5e-4, betas=(0.4, 0.99))
    for name, split, unsplit in (("G", model.G, G), ("D", model.D, D)):
        assert_same_state(split.client_path(0).state_dict(), unsplit, name)


class RecordingClustering(ClusteringRound):
    """The clustering callback, keeping the round it clustered (the test reads the features)."""

    def __init__(self) -> None:
        super().__init__(k=2)
        self.taken: list = []

    def on_round_end(self, trainer, pl_module, round) -> None:
        super().on_round_end(trainer, pl_module, round)
        self.taken.append(round)


class LastStepState(pl.Callback):
    """The discriminator and the real batches as they are when the round's last step starts."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            self.D = copy.deepcopy(pl_module.D)
            self.reals = [(x.clone(), y.clone()) for x, y in batch]


def test_clustering_features_are_the_last_real_batch_at_the_first_common_server_block(tmp_path) -> None:
    # D cuts (head, tail): (1,1), (2,1), (1,2), (2,2): block 1 is on the server for clients 0 and 2 only,
    # block 2 is the first block every client runs on the server (as in the reference)
    model = HuSCFGAN(
        plan=PlanSpec(source="explicit", cuts=[[1, 1, 1, 1], [1, 1, 2, 1], [1, 1, 1, 2], [1, 1, 2, 2]]),
        federation=FederationSpec(mode="clustered", k=2, warmup_rounds=0),
        evaluation=EvaluationSpec(metrics=[], utility_samples=0, sample_grids=False),
        rounds=1,
        local_epochs=1,
    )
    data = HuSCFDataModule([DomainSpec("digits", 2), DomainSpec("glyphs", 2)], batch_size=8, cap=16)
    clustering, last = RecordingClustering(), LastStepState()
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, callbacks=[clustering, last])
    trainer.fit(model, data)
    assert model.D.common_server_block() == 2

    # by hand, from the raw blocks as they were before the last D step, on that step's real batches
    D, (xs, ys) = last.D.train(), zip(*last.reals)
    with torch.no_grad():
        h0 = [D.client_block(i, 0)(xs[i], ys[i]) for i in range(4)]
        s1 = D.server_blocks["1"](torch.cat([h0[0], h0[2]]))  # one server call for the clients with head 1
        h1 = [s1[:8], D.client_block(1, 1)(h0[1]), s1[8:], D.client_block(3, 1)(h0[3])]
        s2 = D.server_blocks["2"](torch.cat(h1))  # block 2: all four clients in one call
    expected = torch.stack([part.mean(dim=0) for part in s2.split(8)]).flatten(2)  # (K, C, H*W) batch means

    (round_clusters,) = clustering.taken
    torch.testing.assert_close(round_clusters.features, expected)


def test_generate_leaves_every_block_in_the_mode_it_found_it() -> None:
    """Generation runs in eval mode, then restores the mode of the whole network (the client's copies and the
    shared server blocks), whichever it was: a user's model.eval() survives evaluation."""
    model = HuSCFGAN(plan=PlanSpec(source="explicit", cuts=[[1, 1, 1, 1], [2, 2, 2, 2]]), rounds=1, local_epochs=1)
    model.configure_clients(["digits", "digits"], [16, 16])
    labels = torch.arange(4)
    for training in (False, True):
        model.train(training)
        images = model.generate(1, labels)
        assert images.shape == (4, 1, 28, 28)
        assert {m.training for m in model.G.modules()} == {training}
    model.eval()
    z = torch.randn(4, model.z_dim)
    torch.testing.assert_close(model.generate(0, labels, z), model.generate(0, labels, z))  # eval: BN running stats
