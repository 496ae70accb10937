"""Median training-step time of HuSCFGAN against an unsplit baseline doing the same arithmetic.

The baseline is one generator and one discriminator stepping on the concatenation of all
clients' batches (what a centralised cGAN would do with the same data per step). The ratio
is the cost of splitting, the wire, the per-client copies and the lock-step bookkeeping.

    .venv/bin/python bench/step_time.py --clients 8 --steps 8
    .venv/bin/python bench/step_time.py --clients 20 --steps 6
    python bench/step_time.py --clients 80 --batch 64 --accelerator cuda   # on a GPU machine
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

from huscf_lightning.config import EvaluationSpec, FederationSpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator


def _sync() -> None:
    """Wait for queued GPU work so wall time measures it (CUDA kernels run asynchronously)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(pl.Callback):
    """Wall time of every training step; optionally profiles the steps after the first (set-up excluded)."""

    def __init__(self, profiler: profile | None = None) -> None:
        self.times: list[float] = []
        self.profiler = profiler

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 1 and self.profiler is not None:
            self.profiler.start()
        _sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync()
        self.times.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.profiler is not None:
            self.profiler.stop()


def huscf_step_times(
    clients: int,
    steps: int,
    batch: int,
    accelerator: str,
    batch_clients: bool | None = None,
    profiler: profile | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> list[float]:
    """Step times of one HuSCFGAN fit (the first, with set-up, left out); ``callbacks`` run before the timer's."""
    half = clients // 2
    data = HuSCFDataModule(
        [DomainSpec("mnist5k", half), DomainSpec("glyphs", clients - half)], batch_size=batch, cap=batch * steps
    )
    model = HuSCFGAN(
        federation=FederationSpec(mode="fedavg"),
        evaluation=EvaluationSpec(metrics=[], utility_samples=0, sample_grids=False),
        rounds=1,
        local_epochs=1,
        batch_clients=batch_clients,
    )
    timer = StepTimer(profiler)
    trainer = pl.Trainer(
        accelerator=accelerator,
        max_epochs=1,
        max_steps=2 * steps,  # Lightning counts each optimiser's step: one D and one G per batch
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, timer],
    )
    trainer.fit(model, data)
    return timer.times[1:]


def baseline_step_times(clients: int, steps: int, batch: int, accelerator: str) -> list[float]:
    device = torch.device("cuda" if accelerator == "cuda" else "cpu")
    g, d = ReferenceGenerator().to(device), ReferenceDiscriminator().to(device)
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    n = clients * batch
    times = []
    for _ in range(steps):
        x, y = torch.rand(n, 1, 28, 28, device=device) * 2 - 1, torch.randint(0, 10, (n,), device=device)
        _sync()
        start = time.perf_counter()
        fake = g(torch.randn(n, 100, device=device), y)
        d_fake, d_real = d(fake.detach(), y), d(x, y)
        loss_d = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        out = d(fake, y)
        loss_g = F.binary_cross_entropy(out, torch.ones_like(out))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        _sync()
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="alternate ours and the baseline this many times")
    parser.add_argument("--accelerator", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-clients", action=argparse.BooleanOptionalAction, default=None,
                        help="vmap clients that share a block, or run them one by one (default: by device)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of our steps")
    args = parser.parse_args()
    if args.profile:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.accelerator == "cuda" else [])
        prof = profile(activities=activities)
        huscf_step_times(args.clients, args.steps, args.batch, args.accelerator, args.batch_clients, prof)
        print(f"profile of {args.steps - 1} steps (the first, with set-up, excluded):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    ours_times: list[float] = []
    base_times: list[float] = []
    for _ in range(args.repeats):  # alternating keeps a busy machine's noise from favouring one side
        ours_times += huscf_step_times(args.clients, args.steps, args.batch, args.accelerator, args.batch_clients)
        base_times += baseline_step_times(args.clients, args.steps, args.batch, args.accelerator)
    ours, base = statistics.median(ours_times), statistics.median(base_times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    where = torch.cuda.get_device_name() if args.accelerator == "cuda" else f"cpu threads={torch.get_num_threads()}"
    print(f"clients={args.clients} batch={args.batch} batch_clients={args.batch_clients} {where}")
    print(f"HuSCFGAN median step  {ours:.3f} s")
    print(f"unsplit baseline      {base:.3f} s")
    print(f"ratio ours/baseline   {ours / base:.2f}")
    print(f"peak RSS              {peak:.0f} MiB")
    if args.accelerator == "cuda":
        print(f"peak GPU memory       {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
