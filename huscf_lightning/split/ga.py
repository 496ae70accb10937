"""A seeded, vectorised genetic algorithm over integer genes (each gene has its own number of values).

Used for cut selection (a gene is one client's cut option of one network) but knows nothing about
latency: it minimises any function that scores a whole (population, genes) array at once.
Tournament selection, uniform or two-point crossover (half each), gene mutation to a different
value, elitism, early stop when the best score stalls, then a steepest-descent polish of the best
individual (fixes the last few genes that random mutation takes long to hit). Genes that are
interchangeable (clients of the same device type) can be declared: each individual is then kept
sorted within every such group, so individuals that differ only by a permutation of
interchangeable clients become identical.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from tqdm.auto import tqdm

from huscf_lightning.errors import HuSCFError

logger = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, float], None]


class GaSettingsError(HuSCFError, ValueError):
    """GA settings that cannot run; the message names the fix."""


def _is_kind(value: object, kind: str) -> bool:
    """Whether a setting's value has its annotated kind (annotations are strings here: 'int', 'float', 'bool')."""
    if kind == "bool":
        return isinstance(value, (bool, np.bool_))
    if isinstance(value, (bool, np.bool_)):
        return False
    if kind == "int":
        return isinstance(value, (int, np.integer))
    return isinstance(value, (int, float, np.integer, np.floating))


@dataclass(frozen=True)
class GaSettings:
    """GA hyper-parameters. Defaults are at least as strong as the reference's (1000 x 1000,
    tournament 5, crossover 0.7, mutation 0.01 per gene)."""

    population: int = 1000
    generations: int = 1000
    tournament: int = 5
    crossover_rate: float = 0.7
    uniform_share: float = 0.5
    mutation_rate: float = 0.01
    elite: int = 10
    patience: int = 100
    seeded_share: float = 0.1
    polish: bool = True

    def __post_init__(self) -> None:
        wrong_type = [
            f"{f.name}={getattr(self, f.name)!r} (want {f.type})"
            for f in fields(self)
            if not _is_kind(getattr(self, f.name), f.type)
        ]
        if wrong_type:
            raise GaSettingsError(f"GA settings of the wrong type: {', '.join(wrong_type)}. Write numbers unquoted.")
        checks = [
            (self.population >= 2, "population must be at least 2"),
            (self.generations >= 1, "generations must be at least 1"),
            (1 <= self.tournament <= self.population, "tournament must be between 1 and population"),
            (0.0 <= self.crossover_rate <= 1.0, "crossover_rate must be in [0, 1]"),
            (0.0 <= self.uniform_share <= 1.0, "uniform_share must be in [0, 1]"),
            (0.0 <= self.mutation_rate <= 1.0, "mutation_rate must be in [0, 1]"),
            (0 <= self.elite < self.population, "elite must be in [0, population)"),
            (self.patience >= 1, "patience must be at least 1 generation"),
            (0.0 <= self.seeded_share <= 1.0, "seeded_share must be in [0, 1]"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise GaSettingsError(f"Invalid GA settings {asdict(self)}: {'; '.join(problems)}.")

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> GaSettings:
        """Settings from a dict; unknown keys are an error, missing keys take the defaults."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise GaSettingsError(f"Unknown GA setting(s) {unknown}; the settings are {sorted(known)}.")
        return cls(**values)


@dataclass(frozen=True)
class GaResult:
    """Best individual found, its score, and how the run went."""

    best: np.ndarray
    best_score: float
    evolved_score: float  # best score before polishing
    generations: int
    stopped_early: bool
    history: tuple[float, ...]  # best score after each generation
    wall_s: float

    def to_dict(self) -> dict:
        return {
            "best_score": self.best_score,
            "evolved_score": self.evolved_score,
            "generations": self.generations,
            "stopped_early": self.stopped_early,
            "wall_s": self.wall_s,
        }


@dataclass(frozen=True)
class Symmetry:
    """Groups of interchangeable genes, prepared so one sort puts every group in order."""

    positions: np.ndarray  # gene positions of all groups, group after group
    offsets: np.ndarray  # per position: group rank x (largest cardinality), keeps groups apart in the sort
    groups: tuple[np.ndarray, ...]

    @classmethod
    def build(cls, groups: Sequence[Sequence[int]], cardinality: np.ndarray) -> Symmetry:
        kept = tuple(np.asarray(g, dtype=np.int64) for g in groups if len(g) > 1)
        for group in kept:
            if np.unique(cardinality[group]).size != 1:
                raise GaSettingsError("Interchangeable genes must have the same number of values.")
        positions = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
        if np.unique(positions).size != positions.size:
            raise GaSettingsError("A gene can belong to at most one group of interchangeable genes.")
        span = int(cardinality.max())
        offsets = np.concatenate([np.full(g.size, rank * span) for rank, g in enumerate(kept)]) if kept else positions
        return cls(positions, offsets, kept)

    def canonicalise(self, population: np.ndarray) -> np.ndarray:
        """Sort every individual's genes within each group (in place): one sort for all groups."""
        if self.positions.size:
            keyed = np.sort(population[:, self.positions] + self.offsets[None, :], axis=1)
            population[:, self.positions] = keyed - self.offsets[None, :]
        return population


def _tournament(scores: np.ndarray, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``count`` winners, each the best of ``size`` uniformly drawn contestants."""
    contestants = rng.integers(0, scores.size, size=(count, size))
    return contestants[np.arange(count), np.argmin(scores[contestants], axis=1)]


def _crossover_mask(pairs: int, genes: int, settings: GaSettings, rng: np.random.Generator) -> np.ndarray:
    """(pairs, genes) True where the children swap parents; uniform or two-point per pair."""
    uniform = rng.random((pairs, genes)) < 0.5
    points = np.sort(rng.integers(0, genes + 1, size=(pairs, 2)), axis=1)
    position = np.arange(genes)[None, :]
    two_point = (position >= points[:, :1]) & (position < points[:, 1:])
    use_uniform = rng.random(pairs) < settings.uniform_share
    crossed = rng.random(pairs) < settings.crossover_rate
    return np.where(use_uniform[:, None], uniform, two_point) & crossed[:, None]


def _mutate(children: np.ndarray, cardinality: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Each gene with probability ``rate`` moves to a different value, uniformly (in place)."""
    rows, cols = np.nonzero((rng.random(children.shape) < rate) & (cardinality > 1)[None, :])
    shift = rng.integers(1, cardinality[cols])
    children[rows, cols] = (children[rows, cols] + shift) % cardinality[cols]
    return children


def _initial_population(
    cardinality: np.ndarray,
    settings: GaSettings,
    symmetry: Symmetry,
    seeds: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Uniformly random individuals, a share of them 'group-uniform' (every gene of a symmetry
    group takes one value, a strong start when interchangeable genes tend to agree), plus ``seeds``."""
    population = rng.integers(0, cardinality[None, :], size=(settings.population, cardinality.size))
    group_uniform = int(round(settings.seeded_share * settings.population)) if symmetry.groups else 0
    for group in symmetry.groups:
        values = rng.integers(0, cardinality[group[0]], size=group_uniform)
        population[:group_uniform, group] = values[:, None]
    if seeds is not None and len(seeds):
        seeds = np.asarray(seeds, dtype=population.dtype)[: settings.population]
        population[-len(seeds) :] = seeds
    return symmetry.canonicalise(population)


def _neighbours(current: np.ndarray, cardinality: np.ndarray, symmetry: Symmetry) -> np.ndarray:
    """Every individual one gene away from ``current``, and every one with a whole symmetry group
    set to a single value (a move that shifts all interchangeable clients at once)."""
    gene = np.repeat(np.arange(cardinality.size), cardinality)
    value = np.concatenate([np.arange(c) for c in cardinality])
    single = np.repeat(current[None, :], gene.size, axis=0)
    single[np.arange(gene.size), gene] = value
    moves = [(group, v) for group in symmetry.groups for v in range(int(cardinality[group[0]]))]
    whole_group = np.repeat(current[None, :], len(moves), axis=0)
    for row, (group, v) in enumerate(moves):
        whole_group[row, group] = v
    return symmetry.canonicalise(np.concatenate([single, whole_group]))


def polish(
    score: ScoreFn, start: np.ndarray, start_score: float, cardinality: np.ndarray, symmetry: Symmetry
) -> tuple[np.ndarray, float]:
    """Steepest descent over `_neighbours` until no neighbour is better (a memetic finish)."""
    current, current_score = start.copy(), start_score
    while True:
        candidates = _neighbours(current, cardinality, symmetry)
        scores = score(candidates)
        index = int(np.argmin(scores))
        if scores[index] >= current_score:
            return current, current_score
        current, current_score = candidates[index].copy(), float(scores[index])


def run_ga(
    score: ScoreFn,
    cardinality: Sequence[int],
    settings: GaSettings | None = None,
    seed: int = 0,
    symmetry_groups: Sequence[Sequence[int]] = (),
    seeds: np.ndarray | None = None,
    on_generation: ProgressFn | None = None,
    progress_bar: bool = False,
) -> GaResult:
    """Minimise ``score`` over integer genes ``0 <= gene[k] < cardinality[k]``.

    ``score`` maps a (population, genes) int array to (population,) floats. ``symmetry_groups`` are
    index lists of interchangeable genes (all of one cardinality). ``seeds`` are individuals placed
    in the first population. ``on_generation(generation, best_score)`` is called after each
    generation; ``progress_bar`` shows a tqdm bar. With ``settings.polish`` the best individual is
    finished by steepest descent over one-gene and whole-group moves.
    """
    settings = settings or GaSettings()
    cardinality = np.asarray(cardinality, dtype=np.int64)
    if cardinality.ndim != 1 or cardinality.size == 0 or (cardinality < 1).any():
        raise GaSettingsError(f"cardinality must be a non-empty list of positive ints; got {cardinality.tolist()}.")
    symmetry = Symmetry.build(symmetry_groups, cardinality)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    population = _initial_population(cardinality, settings, symmetry, seeds, rng)
    scores = score(population)
    best_index = int(np.argmin(scores))
    best, best_score = population[best_index].copy(), float(scores[best_index])
    history: list[float] = []
    stalled = 0
    children_needed = settings.population - settings.elite
    pairs = math.ceil(children_needed / 2)
    bar = _progress_bar(settings.generations) if progress_bar else None
    generation = 0
    for generation in range(1, settings.generations + 1):
        elite = population[np.argsort(scores)[: settings.elite]]
        parents = population[_tournament(scores, 2 * pairs, settings.tournament, rng)]
        first, second = parents[:pairs], parents[pairs:]
        swap = _crossover_mask(pairs, cardinality.size, settings, rng)
        children = np.concatenate([np.where(swap, second, first), np.where(swap, first, second)])[:children_needed]
        children = _mutate(children, cardinality, settings.mutation_rate, rng)
        population = symmetry.canonicalise(np.concatenate([elite, children]))
        scores = score(population)
        index = int(np.argmin(scores))
        if scores[index] < best_score:
            best, best_score, stalled = population[index].copy(), float(scores[index]), 0
        else:
            stalled += 1
        history.append(best_score)
        logger.debug("GA generation %d: best %.6g, population mean %.6g", generation, best_score, float(scores.mean()))
        if on_generation is not None:
            on_generation(generation, best_score)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(best=f"{best_score:.6g}")
        if stalled >= settings.patience:
            break
    if bar is not None:
        bar.close()
    evolved_score = best_score
    if settings.polish:
        best, best_score = polish(score, best, best_score, cardinality, symmetry)
    wall = time.perf_counter() - started
    stopped_early = generation < settings.generations
    logger.info(
        "GA: best %.6g after %d generations%s, %.6g after polishing, in %.2f s",
        evolved_score,
        generation,
        f" (no improvement for {settings.patience})" if stopped_early else "",
        best_score,
        wall,
    )
    return GaResult(best, best_score, evolved_score, generation, stopped_early, tuple(history), wall)


def _progress_bar(total: int) -> tqdm:
    return tqdm(total=total, desc="GA", unit="gen")
