"""Our cut-selection GA against the reference GA's settings, each in the space it searches, with exact optima.

80 clients on the 7 paper profiles with the reference 28x28 networks (batch 64), per assignment seed:
- reference space (heads and tails of 1 or 2 blocks, both networks): the exact optimum, our GA
  restricted to that space, and the reference GA's settings (4 bits per tuple of 4 consecutive
  clients, population 1000, tournament 5, crossover 0.7, bit-flip 0.01, no elitism, no polish, no
  early stop) re-run in our GA code;
- every valid cut: the exact optimum and our GA (default settings: population 1000, up to 1000
  generations, stops after 100 without improvement, symmetry by device type, polish).
Exact optima are by enumeration of device-type counts where small, else the MILP.

Run: ``.venv/bin/python bench/ga_vs_reference.py [--reference-generations N] [--seeds 0 1 2]``.
"""

from __future__ import annotations

import argparse

from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split.devices import assign_profiles, load_profiles
from huscf_lightning.split.latency import LatencyModel
from huscf_lightning.split.profile import profile_gan
from huscf_lightning.split.reference import compare_spaces, reference_settings

CLIENTS = 80


def _model(seed: int) -> LatencyModel:
    profiles = load_profiles("paper")
    gan = profile_gan(ReferenceGenerator(), ReferenceDiscriminator(), 64)
    return LatencyModel.build(gan, profiles, assign_profiles(CLIENTS, profiles, seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-generations", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print("seed | space | exact | our GA (/ exact, wall) | reference GA settings (/ exact, wall)")
    for seed in args.seeds:
        c = compare_spaces(_model(seed), seed, reference=reference_settings(args.reference_generations))
        print(
            f"{seed} | heads/tails 1 or 2 | {c.reference_space_exact:.4f} s | {c.reference_space_ours:.4f} s "
            f"(x{c.reference_space_ours / c.reference_space_exact:.4f}, {c.reference_space_ours_wall_s:.1f} s) | "
            f"{c.reference_space_reference_ga:.4f} s (x{c.reference_space_reference_ga / c.reference_space_exact:.4f}, "
            f"{c.reference_ga_wall_s:.1f} s, {c.reference_ga_generations} generations)"
        )
        print(
            f"{seed} | every valid cut | {c.every_cut_exact:.4f} s | {c.every_cut_ours:.4f} s "
            f"(x{c.every_cut_ours / c.every_cut_exact:.4f}, {c.every_cut_ours_wall_s:.1f} s) | -"
        )
        print(
            f"{seed} | space effect: exact {{1,2}} / exact every cut = "
            f"x{c.reference_space_exact / c.every_cut_exact:.4f}"
        )


if __name__ == "__main__":
    main()
