"""On a CUDA device the split networks, the wire and a clustered run behave as on the CPU.

Skipped without a GPU (CI has none); run on a GPU machine with ``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from huscf_lightning.callbacks import FederatedAggregation
from huscf_lightning.config import EvaluationSpec, FederationSpec, PlanSpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split import SplitNetwork
from huscf_lightning.split.wire import Wire

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MIXED_CUTS = [(1, 1), (2, 1), (1, 2), (2, 2)]


@pytest.mark.parametrize("name", ["G", "D"])
def test_mixed_cut_split_network_on_cuda_equals_the_cpu(name: str) -> None:
    """On CUDA clients sharing a block run batched (vmap), on the CPU one by one: same results (float64)."""
    template = (ReferenceGenerator() if name == "G" else ReferenceDiscriminator()).double()
    cpu = SplitNetwork(template, MIXED_CUTS, name, Wire())
    gpu = SplitNetwork(template, MIXED_CUTS, name, Wire()).cuda()
    labels = [torch.randint(0, 10, (5,)) for _ in MIXED_CUTS]
    inputs = [torch.randn(5, 100) if name == "G" else torch.rand(5, 1, 28, 28) * 2 - 1 for _ in MIXED_CUTS]
    inputs = [x.double() for x in inputs]
    calls = []
    gpu.client_stacks["0"].register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape))
    on_cpu = cpu(inputs, labels)
    on_gpu = gpu([x.cuda() for x in inputs], [y.cuda() for y in labels])
    assert len(calls) == 1  # block 0 of all clients in one stacked call
    for a, b in zip(on_cpu, on_gpu):
        assert b.is_cuda
        torch.testing.assert_close(b.cpu(), a, rtol=1e-10, atol=1e-10)
    sum(out.sum() for out in on_cpu).backward()
    sum(out.sum() for out in on_gpu).backward()
    for (key, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        assert p_gpu.grad.is_cuda
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-8, atol=1e-9, msg=lambda m, key=key: f"{key}: {m}")


class DevicesAtRoundEnd(pl.Callback):
    """Where every parameter and buffer lives after each round's aggregation."""

    def __init__(self) -> None:
        self.seen: list[set[str]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seen.append({t.device.type for t in [*pl_module.parameters(), *pl_module.buffers()]})


def test_a_clustered_kld_run_trains_and_aggregates_on_the_gpu(tmp_path) -> None:
    model = HuSCFGAN(
        plan=PlanSpec(source="explicit", cuts=[[1, 1, 1, 1], [2, 1, 1, 1], [1, 2, 1, 1], [2, 2, 1, 1]]),
        federation=FederationSpec(mode="kld_clustered", warmup_rounds=1),
        evaluation=EvaluationSpec(metrics=[], utility_samples=0, sample_grids=False),
        rounds=2,
        local_epochs=1,
    )
    data = HuSCFDataModule([DomainSpec("digits", 2), DomainSpec("glyphs", 2)], batch_size=16, cap=64)
    devices = DevicesAtRoundEnd()
    trainer = pl.Trainer(accelerator="cuda", devices=1, max_epochs=model.max_epochs, logger=False, callbacks=[devices],
                         enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert devices.seen == [{"cuda"}, {"cuda"}]  # Lightning moves the module back to the CPU after fit
    (aggregation,) = [c for c in trainer.callbacks if isinstance(c, FederatedAggregation)]
    assert [r["mode"] for r in aggregation.history] == ["fedavg", "kld_clustered"]
    assert abs(sum(aggregation.history[-1]["server_weights"]) - 1) < 1e-6
    groups = aggregation.history[-1]["groups"]
    for net in (model.G, model.D):  # members of one cluster hold the same copy of block 0 (always local)
        for i in range(model.num_clients):
            for j in range(model.num_clients):
                own_i, own_j = net.client_state(i), net.client_state(j)
                same = all(torch.equal(v, own_j[key]) for key, v in own_i.items() if key[0] == 0)
                assert same == (groups[i] == groups[j])
    assert model.wire.dtypes_carried == {torch.float32}
