"""A user's own block networks split, train and aggregate like the reference ones."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from huscf_lightning.callbacks import ClusteringRound, FederatedAggregation
from huscf_lightning.config import ConfigError, EvaluationSpec, FederationSpec, PlanSpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.nets import BlockNetwork, LabelledBlock
from huscf_lightning.split import SplitNetwork, valid_head_tails
from huscf_lightning.split.wire import Wire


class EmbedConcat(LabelledBlock):
    def __init__(self, width: int, num_classes: int, out: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, 8)
        self.linear = nn.Linear(width + 8, out)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(torch.cat([x.flatten(1), self.embed(labels)], dim=1)))


class MLPGenerator(BlockNetwork):
    """A 6-block MLP generator: more blocks means more cut options."""

    def __init__(self, z_dim: int = 16, num_classes: int = 10) -> None:
        self.z_dim, self.num_classes = z_dim, num_classes
        hidden = [nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU()) for _ in range(4)]
        super().__init__([EmbedConcat(z_dim, num_classes, 64), *hidden,
                          nn.Sequential(nn.Linear(64, 784), nn.Tanh(), nn.Unflatten(1, (1, 28, 28)))])


class MLPDiscriminator(BlockNetwork):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__([EmbedConcat(784, num_classes, 64),
                          nn.Sequential(nn.Linear(64, 64), nn.LeakyReLU(0.2)),
                          nn.Sequential(nn.Linear(64, 32), nn.LeakyReLU(0.2)),
                          nn.Sequential(nn.Linear(32, 1), nn.Sigmoid())])


def test_every_cut_of_a_user_network_equals_the_unsplit_network() -> None:
    template = MLPGenerator().eval()
    assert len(valid_head_tails(6)) == 10
    z, y = torch.randn(5, 16), torch.randint(0, 10, (5,))
    for cut in valid_head_tails(6):
        split = SplitNetwork(template, [cut], "G", Wire()).eval()
        torch.testing.assert_close(split([z], [y])[0], template(z, y))


@pytest.mark.parametrize("batch_clients", [None, True])  # by device (one by one here), and vmap-batched
def test_a_user_network_trains_and_aggregates_through_hu_scf_gan(tmp_path, batch_clients: bool | None) -> None:
    model = HuSCFGAN(
        batch_clients=batch_clients,
        generator=MLPGenerator(),
        discriminator=MLPDiscriminator(),
        z_dim=16,
        plan=PlanSpec(source="random"),
        federation=FederationSpec(mode="kld_clustered", warmup_rounds=1, k="auto"),
        evaluation=EvaluationSpec(metrics=[], utility_samples=0, sample_grids=False),
        rounds=2,
        local_epochs=1,
    )
    data = HuSCFDataModule([DomainSpec("digits", 2), DomainSpec("mnist5k", 2)], batch_size=8, cap=16)
    trainer = pl.Trainer(max_epochs=model.max_epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert trainer.global_step == 8  # 2 batches x 2 epochs x (one D and one G optimiser step)
    assert model.G.num_blocks == 6 and model.D.num_blocks == 4
    # after the last aggregation the members of one cluster hold identical copies of block 0 (always local)
    (aggregation,) = [c for c in trainer.callbacks if isinstance(c, FederatedAggregation)]
    assert [r["mode"] for r in aggregation.history] == ["fedavg", "kld_clustered"]  # one warm-up round
    groups = aggregation.history[-1]["groups"]
    (clustering,) = [c for c in trainer.callbacks if isinstance(c, ClusteringRound)]
    assert sorted(clustering.history[-1]["silhouette_by_k"]) == ["2", "3"]  # k: auto logs every k it tried
    last = aggregation.history[-1]  # the KLD scores are logged with the weights they gave
    assert len(last["cluster_scores"]) == len(last["global_scores"]) == 4 and min(last["global_scores"]) >= 0
    for net in (model.G, model.D):
        for i in range(model.num_clients):
            for j in range(model.num_clients):
                own_i, own_j = net.client_state(i), net.client_state(j)
                same = all(torch.equal(v, own_j[key]) for key, v in own_i.items() if key[0] == 0)
                assert same == (groups[i] == groups[j]), (i, j, groups)
    images = model.generate(0, torch.arange(10))
    assert images.shape == (10, 1, 28, 28)


def _quiet_model(**kwargs) -> HuSCFGAN:
    return HuSCFGAN(evaluation=EvaluationSpec(metrics=[], utility_samples=0, sample_grids=False), **kwargs)


def test_a_trainer_length_that_is_not_whole_rounds_is_a_clear_error(tmp_path) -> None:
    model = _quiet_model(rounds=2, local_epochs=2)
    data = HuSCFDataModule([DomainSpec("digits", 2)], batch_size=8, cap=16)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"max_epochs=3 .* = 4 epochs; use Trainer\(max_epochs=model.max_epochs\)"):
        trainer.fit(model, data)


def test_evaluation_without_a_datamodule_stops_at_fit_start_with_the_fix(tmp_path) -> None:
    model = HuSCFGAN(rounds=1, local_epochs=1)  # evaluation on, as by default
    model.configure_clients(["digits", "digits"], [16, 16])
    loaders = [DataLoader(TensorDataset(torch.rand(16, 1, 28, 28) * 2 - 1, torch.arange(16) % 10), batch_size=8)
               for _ in range(2)]
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=tmp_path)
    with pytest.raises(ConfigError, match="train with a HuSCFDataModule, or turn evaluation off"):
        trainer.fit(model, train_dataloaders=CombinedLoader(loaders, "max_size_cycle"))
    assert trainer.global_step == 0  # stopped before any training
