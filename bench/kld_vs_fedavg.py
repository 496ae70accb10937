"""The paper's central claim on offline data: KLD-clustered aggregation against plain FedAvg.

Runs the same two-domain non-IID scenario (mnist5k + glyphs, 4 clients each) for the same
budget once per aggregation mode and prints, per round, the clusters' adjusted Rand index
against the true domains and the generation score per domain, then the final ratio.

    .venv/bin/python bench/kld_vs_fedavg.py --rounds 6
"""

from __future__ import annotations

import argparse
import tempfile

from huscf_lightning.cli import run_cli


def run(mode: str, rounds: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cli = run_cli(
            [
                "fit",
                "--trainer.logger=false",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp}",
                f"--model.rounds={rounds}",
                f"--model.federation.mode={mode}",
                "--model.evaluation.utility_samples=0",
                "--model.evaluation.sample_grids=false",
                "--data.domains=[{name: mnist5k, clients: 4, distribution: noniid}, "
                "{name: glyphs, clients: 4, distribution: noniid}]",
                *extra,
            ]
        )
    callbacks = {type(c).__name__: c for c in cli.trainer.callbacks}
    clusters = callbacks.get("ClusteringRound")
    return {
        "ari": [row["ari"] for row in clusters.history] if clusters else [],
        "scores": callbacks["GenerationEvaluation"].history,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("extra", nargs="*", help="more fit overrides, e.g. --model.local_epochs=2")
    args = parser.parse_args()
    results = {mode: run(mode, args.rounds, args.extra) for mode in ("kld_clustered", "fedavg")}
    for mode, result in results.items():
        print(f"\n{mode}")
        if result["ari"]:
            print("  ARI per round:", ", ".join(f"{a:.2f}" for a in result["ari"]))
        for row in result["scores"]:
            scores = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in row.items() if k.startswith("eval/score/"))
            print(f"  round {int(row['round'])}: {scores}")
    final = {mode: r["scores"][-1] for mode, r in results.items()}
    print("\nfinal generation score, kld_clustered / fedavg:")
    for key in final["kld_clustered"]:
        if key.startswith("eval/score/"):
            ratio = final["kld_clustered"][key] / final["fedavg"][key]
            print(f"  {key.split('/')[-1]}: {final['kld_clustered'][key]:.3f} / {final['fedavg'][key]:.3f} = {ratio:.2f}")


if __name__ == "__main__":
    main()
