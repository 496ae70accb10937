"""The reference's cut search re-run in our GA code, and a comparison that keeps search and space apart.

The reference GA (METHOD.md, "Cut selection") searches heads and tails of 1 or 2 blocks only, with
4 consecutive clients sharing one tuple of 4 bits (G head, G tail, D head, D tail, each 1 + bit).
Setting it against our GA over every valid cut mixes two effects: the smaller space and the weaker
search. `compare_spaces` measures each search against the exact optimum of the space it ran in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .exhaustive import exact_optimum
from .ga import GaResult, GaSettings, run_ga
from .latency import LatencyModel
from .selection import ga_search

REFERENCE_HEAD_TAILS = ((1, 1), (1, 2), (2, 1), (2, 2))
CLIENTS_PER_TUPLE = 4


def reference_settings(generations: int = 1000) -> GaSettings:
    """The reference's GA: population 1000, tournament 5, crossover 0.7 (uniform or two-point, half
    each), bit-flip 0.01, no elitism, no polish, no early stop."""
    return GaSettings(
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


def restrict_to_reference_space(model: LatencyModel) -> LatencyModel:
    """``model`` with every client's G and D head and tail limited to 1 or 2 blocks."""
    return model.restricted(REFERENCE_HEAD_TAILS, REFERENCE_HEAD_TAILS)


def reference_ga(model: LatencyModel, seed: int, settings: GaSettings | None = None) -> GaResult:
    """The reference's search on ``model``'s clients: 4 bits per tuple of 4 consecutive clients
    (the last tuple may be shorter), each bit choosing 1 or 2 blocks; no symmetry between clients."""
    space = restrict_to_reference_space(model)
    clients = model.num_clients
    tuples = math.ceil(clients / CLIENTS_PER_TUPLE)
    # bits (head, tail) -> option index; REFERENCE_HEAD_TAILS is in (head, tail) bit order
    option = np.array([[0, 1], [2, 3]])

    def score(bits: np.ndarray) -> np.ndarray:
        per_client = np.repeat(bits.reshape(len(bits), tuples, 4), CLIENTS_PER_TUPLE, axis=1)[:, :clients]
        g = option[per_client[..., 0], per_client[..., 1]]
        d = option[per_client[..., 2], per_client[..., 3]]
        return space.score(g, d)

    return run_ga(score, [2] * (4 * tuples), settings or reference_settings(), seed=seed)


@dataclass(frozen=True)
class SpaceComparison:
    """Modeled iteration latencies (s) for one client assignment, each labelled by its space.

    ``reference_space_*``: heads and tails of 1 or 2 (the reference's space); ``every_cut_*``: every
    valid cut. ``*_exact`` is that space's optimum; ``*_wall_s`` the searches' wall times.
    """

    reference_space_exact: float
    reference_space_ours: float
    reference_space_reference_ga: float
    every_cut_exact: float
    every_cut_ours: float
    reference_ga_generations: int
    reference_ga_wall_s: float
    reference_space_ours_wall_s: float
    every_cut_ours_wall_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare_spaces(
    model: LatencyModel, seed: int, ours: GaSettings | None = None, reference: GaSettings | None = None
) -> SpaceComparison:
    """Both GAs and the exact optimum in the reference's space, and our GA and the exact optimum over
    every valid cut of ``model``; GA settings default to ours (`GaSettings()`) and the reference's."""
    ours = ours or GaSettings()
    space = restrict_to_reference_space(model)
    _, _, in_space = ga_search(space, ours, seed, None, False)
    _, _, every_cut = ga_search(model, ours, seed, None, False)
    reference_result = reference_ga(model, seed, reference)
    return SpaceComparison(
        reference_space_exact=exact_optimum(space).latency_s,
        reference_space_ours=in_space["best_score"],
        reference_space_reference_ga=reference_result.best_score,
        every_cut_exact=exact_optimum(model).latency_s,
        every_cut_ours=every_cut["best_score"],
        reference_ga_generations=reference_result.generations,
        reference_ga_wall_s=reference_result.wall_s,
        reference_space_ours_wall_s=in_space["wall_s"],
        every_cut_ours_wall_s=every_cut["wall_s"],
    )
