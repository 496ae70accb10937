"""The paper's central claim on offline data: KLD-clustered aggregation against plain FedAvg.

Runs the same two-domain non-IID scenario (mnist5k + glyphs, 4 clients each, batch 32, cap 320,
seeded random cuts) for the same budget once per aggregation mode and seed, and prints per round
the clusters' adjusted Rand index against the true domains and the generation score per domain,
then the final and the last-three-rounds mean scores of both modes. Uses the Python API only (no
MLflow), so it also runs on a bare GPU machine.

    .venv/bin/python bench/kld_vs_fedavg.py --rounds 6 --local-epochs 2 --seeds 0 1 2
    python bench/kld_vs_fedavg.py --rounds 15 --local-epochs 5 --seeds 0 1 2 --accelerator cuda
"""

from __future__ import annotations

import argparse
import logging
import statistics

import lightning.pytorch as pl

from huscf_lightning.callbacks import ClusteringRound, GenerationEvaluation
from huscf_lightning.config import EvaluationSpec, FederationSpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN

DOMAINS = ("mnist5k", "glyphs")


def run(mode: str, rounds: int, local_epochs: int, seed: int, accelerator: str) -> dict:
    """One training run; its clusters' ARI and generation scores per round."""
    pl.seed_everything(seed, verbose=False)
    data = HuSCFDataModule([DomainSpec(d, 4, "noniid") for d in DOMAINS], batch_size=32, seed=seed, cap=320)
    model = HuSCFGAN(
        federation=FederationSpec(mode=mode),
        evaluation=EvaluationSpec(metrics=["score"], num_samples=1000, utility_samples=0, sample_grids=False),
        rounds=rounds,
        local_epochs=local_epochs,
        seed=seed,
    )
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_epochs=model.max_epochs, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data)
    callbacks = {type(c): c for c in trainer.callbacks}
    clustering = callbacks.get(ClusteringRound)
    return {
        "ari": [row["ari"] for row in clustering.history] if clustering else [],
        "scores": [{d: row[f"eval/score/{d}"] for d in DOMAINS} for row in callbacks[GenerationEvaluation].history],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    summary = []
    for seed in args.seeds:
        results = {mode: run(mode, args.rounds, args.local_epochs, seed, args.accelerator) for mode in ("kld_clustered", "fedavg")}
        print(f"\nseed {seed}")
        for mode, result in results.items():
            if result["ari"]:
                print(f"  {mode} ARI per round: " + ", ".join(f"{a:.2f}" for a in result["ari"]))
            for d in DOMAINS:
                print(f"  {mode} {d} score per round: " + ", ".join(f"{row[d]:.2f}" for row in result["scores"]))
        for d in DOMAINS:
            final = {m: r["scores"][-1][d] for m, r in results.items()}
            last3 = {m: statistics.mean(row[d] for row in r["scores"][-3:]) for m, r in results.items()}
            summary.append((seed, d, final, last3))
    print("\nkld_clustered vs fedavg: final round | mean of the last three rounds")
    for seed, d, final, last3 in summary:
        print(f"  seed {seed} {d:8s} {final['kld_clustered']:.2f} vs {final['fedavg']:.2f} "
              f"({final['kld_clustered'] / final['fedavg']:.2f}x) | {last3['kld_clustered']:.2f} vs {last3['fedavg']:.2f} "
              f"({last3['kld_clustered'] / last3['fedavg']:.2f}x)")


if __name__ == "__main__":
    main()
