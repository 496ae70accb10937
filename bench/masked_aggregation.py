"""What masked aggregation adds to a round: its aggregation time against plain aggregation's and a round's.

The default job's networks (quarter width, seeded random cuts, KLD-clustered) with many clients, half MNIST 5k and
half glyphs. One short fit measures the training step; then, on the trained model, the round-end aggregation of
both networks runs alternately masked and plain (``--repeats`` each, same weights: two clusters) and the medians
are compared with a round of ``--steps_per_round`` steps (the default job's 2,000-image cap at batch 64: 32).

    .venv/bin/python bench/masked_aggregation.py --clients 80
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import lightning.pytorch as pl
import torch
from many_clients import StepClock  # bench/ is the script's folder, first on sys.path

from huscf_lightning.config import EvaluationSpec, FederationSpec, PlanSpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.federation.states import aggregate_network
from huscf_lightning.federation.weights import clustered_aggregation
from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.privacy.masking import MaskSession, client_secret


def aggregation_seconds(model: HuSCFGAN, masked: bool, round_index: int) -> float:
    """One round end's aggregation of G and D, clusters by domain."""
    sizes = torch.as_tensor(model.client_sizes, dtype=torch.float64)
    groups = torch.as_tensor([0 if d == "mnist5k" else 1 for d in model.client_domains])
    weights = clustered_aggregation(sizes, groups)
    started = time.perf_counter()
    for name, net in (("G", model.G), ("D", model.D)):
        masks = MaskSession(client_secret(0), round_index, name) if masked else None
        aggregate_network(net, weights, None, masks)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=80)
    parser.add_argument("--steps_per_round", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    half = args.clients // 2
    pl.seed_everything(0)
    model = HuSCFGAN(
        ReferenceGenerator(width=0.25), ReferenceDiscriminator(width=0.25), plan=PlanSpec(source="random"),
        federation=FederationSpec(mode="kld_clustered", warmup_rounds=1), rounds=1, local_epochs=1,
        evaluation=EvaluationSpec(metrics=[], utility_samples=0, sample_grids=False), seed=0,
    )
    data = HuSCFDataModule([DomainSpec("mnist5k", half), DomainSpec("glyphs", args.clients - half,
                                                                   options={"train_per_class": 300})],
                           batch_size=64, cap=256)
    clock = StepClock()
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[clock]).fit(model, data)
    step = statistics.median(clock.times[1:] or clock.times)
    plain, masked = [], []
    for r in range(args.repeats):
        plain.append(aggregation_seconds(model, False, r))
        masked.append(aggregation_seconds(model, True, r))
    round_seconds = args.steps_per_round * step + statistics.median(plain)
    extra = statistics.median(masked) - statistics.median(plain)
    sys.stdout.write(
        f"{args.clients} clients: step {step:.3f} s (median of {len(clock.times)}), round of {args.steps_per_round} "
        f"steps {round_seconds:.1f} s\n"
        f"aggregation of G and D: plain {statistics.median(plain):.3f} s, masked {statistics.median(masked):.3f} s "
        f"(medians of {args.repeats}; masked runs {[round(t, 3) for t in masked]})\n"
        f"masked aggregation adds {extra:.3f} s = {100 * extra / round_seconds:.2f} % of a round\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
