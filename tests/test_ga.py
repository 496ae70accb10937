"""GA: exact optima on enumerable instances, determinism, symmetry handling, settings errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from huscf_lightning.split.devices import DeviceProfile, ProfileSet, ServerProfile
from huscf_lightning.split.exhaustive import exact_optimum
from huscf_lightning.split.ga import GaSettings, GaSettingsError, Symmetry, run_ga
from huscf_lightning.split.latency import LatencyModel
from huscf_lightning.split.profile import BlockProfile, GanProfile, NetworkProfile


def _network(forward: list[float], out_bytes: list[int]) -> NetworkProfile:
    return NetworkProfile(tuple(BlockProfile(int(f), int(2 * f), b) for f, b in zip(forward, out_bytes)), 64)


SMALL_PROFILES = ProfileSet(
    ServerProfile(flops_per_s=5e9, rate_bytes_per_s=4e8),
    (DeviceProfile("slow", 500.0, 1.0, 5e7), DeviceProfile("mid", 2000.0, 2.0, 2e8), DeviceProfile("fast", 8000.0, 4.0, 8e8)),
)
SMALL_GAN = GanProfile(
    _network([2e8, 9e8, 3e8, 7e8, 1e8, 5e7], [3_000_000, 1_000_000, 4_000_000, 500_000, 200_000, 8]),
    _network([1e8, 6e8, 8e8, 2e7], [2_000_000, 3_000_000, 700_000, 256]),
)


def _cut_problem(names: list[str]):
    model = LatencyModel.build(SMALL_GAN, SMALL_PROFILES, names)
    k = len(names)
    cardinality = [model.generator.num_options] * k + [model.discriminator.num_options] * k
    groups = [np.flatnonzero(model.client_groups == g) for g in range(model.num_groups)]
    symmetry = groups + [g + k for g in groups]

    def score(population: np.ndarray) -> np.ndarray:
        return model.score(population[:, :k], population[:, k:])

    return model, score, cardinality, symmetry


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ga_finds_the_enumerated_optimum(seed: int) -> None:
    names = ["slow", "fast", "mid", "slow", "fast"]
    model, score, cardinality, symmetry = _cut_problem(names)
    optimum = exact_optimum(model, "clients").latency_s
    # default settings without the closing local search, so the optimum is the GA's own
    result = run_ga(score, cardinality, GaSettings(polish=False), seed=seed, symmetry_groups=symmetry)
    assert result.best_score == result.evolved_score == pytest.approx(optimum, rel=1e-12)
    assert score(result.best[None])[0] == pytest.approx(result.best_score)


def test_brute_force_over_every_joint_assignment_agrees_with_every_exact_method_and_the_ga() -> None:
    names = ["slow", "mid", "fast"]
    model, score, cardinality, _ = _cut_problem(names)
    every = np.array(list(itertools.product(*(range(c) for c in cardinality))))  # 10^3 G x 3^3 D assignments
    assert len(every) == int(np.prod(cardinality)) == 27_000
    brute = float(score(every).min())
    for method in ("clients", "groups", "milp"):
        exact = exact_optimum(model, method)
        assert exact.latency_s == pytest.approx(brute, rel=1e-9), method
        genes = np.concatenate([exact.g_genes, exact.d_genes])[None]
        assert score(genes)[0] == pytest.approx(brute, rel=1e-9), method
    result = run_ga(score, cardinality, GaSettings(population=200, generations=200, patience=60, polish=False), seed=0)
    assert result.best_score == pytest.approx(brute, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_ga_without_polish_and_symmetry_still_finds_the_optimum_on_a_tiny_instance(seed: int) -> None:
    names = ["slow", "mid", "fast"]
    model, score, cardinality, _ = _cut_problem(names)
    optimum = exact_optimum(model, "clients").latency_s
    settings = GaSettings(population=200, generations=200, patience=60, polish=False)
    result = run_ga(score, cardinality, settings, seed=seed)
    assert result.best_score == pytest.approx(optimum, rel=1e-12)
    assert result.evolved_score == result.best_score


def test_ga_is_deterministic_per_seed_and_reports_progress() -> None:
    target = np.array([3, 0, 2, 1, 4, 4, 0, 2])
    cardinality = [5] * target.size

    def score(population: np.ndarray) -> np.ndarray:
        return np.abs(population - target[None, :]).sum(axis=1).astype(float)

    seen: list[tuple[int, float]] = []
    settings = GaSettings(population=60, generations=80, patience=20, polish=False)
    first = run_ga(score, cardinality, settings, seed=5, on_generation=lambda g, s: seen.append((g, s)))
    second = run_ga(score, cardinality, settings, seed=5)
    np.testing.assert_array_equal(first.best, second.best)
    assert first.history == second.history
    assert [g for g, _ in seen] == list(range(1, first.generations + 1))
    assert all(a >= b for a, b in zip(first.history, first.history[1:]))
    np.testing.assert_array_equal(first.best, target)


def test_symmetry_sorts_within_groups_only() -> None:
    cardinality = np.array([4, 4, 4, 3, 3])
    symmetry = Symmetry.build([[0, 2], [3, 4]], cardinality)
    population = np.array([[3, 1, 0, 2, 1], [0, 3, 2, 0, 2]])
    np.testing.assert_array_equal(symmetry.canonicalise(population), [[0, 1, 3, 1, 2], [0, 3, 2, 0, 2]])
    with pytest.raises(GaSettingsError, match="same number of values"):
        Symmetry.build([[0, 3]], cardinality)


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(GaSettingsError, match="Unknown GA setting"):
        GaSettings.from_mapping({"populaton": 10})
    with pytest.raises(GaSettingsError, match="tournament must be"):
        GaSettings(population=4, tournament=5)
    with pytest.raises(GaSettingsError, match="mutation_rate"):
        GaSettings(mutation_rate=1.5)
    with pytest.raises(GaSettingsError, match="population='1000'"):
        GaSettings.from_mapping({"population": "1000"})  # quoted in a YAML file
    with pytest.raises(GaSettingsError, match="polish=1"):
        GaSettings(polish=1)
    assert GaSettings.from_mapping(None) == GaSettings()
