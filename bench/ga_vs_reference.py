"""Our cut-selection GA against the exact optimum and a re-run of the reference GA's settings.

80 clients on the 7 paper profiles with the reference 28x28 networks (batch 64):
- ours: `select_cuts`' GA (default settings: population 1000, up to 1000 generations, stops after
  100 without improvement, symmetry by device type, polish), wall time and modeled latency;
- exact: the optimum by device-type groups (enumeration size reported; solved by MILP);
- reference: the reference GA's settings run in our GA code: 80 bits (20 gene tuples of 4 bits,
  each tuple shared by 4 consecutive clients; a bit says whether block 1 / block 3 is local, so
  head and tail are 1 or 2), population 1000, tournament 5, crossover 0.7 (uniform or two-point,
  half each), bit-flip 0.01, no elitism, no symmetry, no polish, no early stop.

Run: ``.venv/bin/python bench/ga_vs_reference.py [--reference-generations N] [--seeds 0 1 2]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split.devices import assign_profiles, load_profiles
from huscf_lightning.split.exhaustive import exact_optimum, group_space_size
from huscf_lightning.split.ga import GaSettings, run_ga
from huscf_lightning.split.latency import LatencyModel
from huscf_lightning.split.profile import profile_gan

CLIENTS = 80
CLIENTS_PER_TUPLE = 4


def _model(seed: int) -> LatencyModel:
    profiles = load_profiles("paper")
    gan = profile_gan(ReferenceGenerator(), ReferenceDiscriminator(), 64)
    return LatencyModel.build(gan, profiles, assign_profiles(CLIENTS, profiles, seed))


def _ours(model: LatencyModel, seed: int) -> tuple[float, float, int]:
    k = model.num_clients
    groups = [np.flatnonzero(model.client_groups == g) for g in range(model.num_groups)]
    result = run_ga(
        lambda pop: model.score(pop[:, :k], pop[:, k:]),
        [model.generator.num_options] * k + [model.discriminator.num_options] * k,
        GaSettings(),
        seed=seed,
        symmetry_groups=groups + [g + k for g in groups],
    )
    return result.best_score, result.wall_s, result.generations


def _reference(model: LatencyModel, seed: int, generations: int) -> tuple[float, float, int]:
    tuples = model.num_clients // CLIENTS_PER_TUPLE

    def option_table(net: str) -> np.ndarray:
        options = model.tables(net).options
        return np.array([[options.index((1 + head_bit, 1 + tail_bit)) for tail_bit in (0, 1)] for head_bit in (0, 1)])

    g_table, d_table = option_table("G"), option_table("D")

    def score(bits: np.ndarray) -> np.ndarray:
        per_client = np.repeat(bits.reshape(len(bits), tuples, 4), CLIENTS_PER_TUPLE, axis=1)
        g = g_table[per_client[..., 0], per_client[..., 1]]
        d = d_table[per_client[..., 2], per_client[..., 3]]
        return model.score(g, d)

    settings = GaSettings(
        population=1000,
        generations=generations,
        tournament=5,
        crossover_rate=0.7,
        uniform_share=0.5,
        mutation_rate=0.01,
        elite=0,
        patience=generations,
        polish=False,
    )
    result = run_ga(score, [2] * (4 * tuples), settings, seed=seed)
    return result.best_score, result.wall_s, result.generations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-generations", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    for seed in args.seeds:
        model = _model(seed)
        started = time.perf_counter()
        exact = exact_optimum(model, "milp")
        exact_s = time.perf_counter() - started
        sizes = {net: group_space_size(model, net) for net in ("G", "D")}
        ours, ours_s, ours_generations = _ours(model, seed)
        ref, ref_s, ref_generations = _reference(model, seed, args.reference_generations)
        per_generation = ref_s / ref_generations
        print(f"seed {seed}: group sizes {model.group_sizes().tolist()}")
        print(f"  exact (MILP over group counts): {exact.latency_s:.6f} s latency in {exact_s:.3f} s wall "
              f"(enumeration by groups would score {sizes['G']:.3g} + {sizes['D']:.3g} count vectors)")
        print(f"  ours: {ours:.6f} s latency in {ours_s:.2f} s wall, {ours_generations} generations")
        print(f"  reference settings: {ref:.6f} s latency after {ref_generations} generations, "
              f"{ref_s:.2f} s wall, {1000 * per_generation:.2f} ms/generation "
              f"(1000 generations: {1000 * per_generation:.1f} s)")
        print(f"  ratios: ours/exact latency {ours / exact.latency_s:.4f}, reference/ours latency {ref / ours:.4f}, "
              f"reference 1000-generation time / ours time {1000 * per_generation / ours_s:.2f}")


if __name__ == "__main__":
    main()
