"""One HuSCFGAN iteration is METHOD.md's cGAN iteration: D on fakes and reals, D step, then G through D."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import torch
from torch.nn import functional as F

from huscf_lightning.config import EvaluationSpec, FederationSpec, PlanSpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.module import HuSCFGAN


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
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.4, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=5e-4, betas=(0.4, 0.99))
    z = torch.randn(len(y), 100, generator=torch.Generator().manual_seed(3))
    fake = G(z, y)
    d_fake, d_real = D(fake.detach(), y), D(x, y)
    loss_d = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    out = D(fake, y)
    loss_g = F.binary_cross_entropy(out, torch.ones_like(out))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()

    for name, split, unsplit in (("G", model.G, G), ("D", model.D, D)):
        trained = split.client_path(0).state_dict()
        for key, value in unsplit.state_dict().items():  # parameters and batch-norm statistics
            torch.testing.assert_close(trained[key], value, msg=lambda m, key=key: f"{name} {key}: {m}")
