"""Latency model: a hand computation, an independent per-client reference, and the exact solvers."""

from __future__ import annotations

import numpy as np
import pytest

from huscf_lightning.split.devices import DeviceProfile, ProfileSet, ServerProfile
from huscf_lightning.split.exhaustive import ExhaustiveError, exact_optimum
from huscf_lightning.split.latency import LatencyModel, build_tables
from huscf_lightning.split.plan import PlanError, valid_head_tails
from huscf_lightning.split.profile import BlockProfile, GanProfile, NetworkProfile


def _network(forward: list[float], out_bytes: list[int]) -> NetworkProfile:
    return NetworkProfile(tuple(BlockProfile(int(f), int(2 * f), b) for f, b in zip(forward, out_bytes)), 64)


HAND_NET = _network([1e6, 4e6, 2e6, 1e6], [1_000_000, 2_000_000, 1_000_000, 8])
HAND_PROFILES = ProfileSet(
    ServerProfile(flops_per_s=1e7, rate_bytes_per_s=2e6),
    (DeviceProfile("a", 1.0, 1.0, 1e6), DeviceProfile("b", 2.0, 1.0, 0.5e6)),
)


def _genes(net_blocks: int, cuts: list[tuple[int, int]]) -> np.ndarray:
    options = valid_head_tails(net_blocks)
    return np.array([[options.index(c) for c in cuts]])


def test_hand_computed_example_forward_and_backward_of_g_and_d() -> None:
    model = LatencyModel.build(GanProfile(HAND_NET, HAND_NET), HAND_PROFILES, ["a", "b"])
    # G: both clients (1, 1), so the server runs blocks 1 and 2 for two clients.
    # forward: arrivals a 1+1=2, b 0.5+2=2.5; block1 2.5+0.8=3.3; block2 3.3+0.4=3.7;
    # tails: a 3.7+0.5+1=5.2, b 3.7+0.5+0.5=4.7 -> 5.2.
    # backward: a 2+1=3, b 1+2=3; block2 3+0.8=3.8; block1 3.8+1.6=5.4; heads a 5.4+0.5+2=7.9 -> 7.9.
    g = _genes(4, [(1, 1), (1, 1)])
    # D: a (1, 2) runs block 1 only, b (2, 1) block 2 only.
    # forward: a arrives 2, block1 2+0.4=2.4; b arrives 2.5+4=6.5, block2 max(2.4, 6.5)+0.2=6.7;
    # tails: a 2.4+1+3=6.4, b 6.7+0.5+0.5=7.7 -> 7.7.
    # backward: b 1+2=3 into block2: 3.4; a 6+2=8 into block1: max(3.4, 8)+0.8=8.8;
    # heads: a 8.8+0.5+2=11.3, b 3.4+1+5=9.4 -> 11.3.
    d = _genes(4, [(1, 2), (2, 1)])
    breakdown = model.breakdown(g[0], d[0])
    assert breakdown["G_forward"]["seconds"] == pytest.approx(5.2)
    assert breakdown["G_backward"]["seconds"] == pytest.approx(7.9)
    assert breakdown["D_forward"]["seconds"] == pytest.approx(7.7)
    assert breakdown["D_backward"]["seconds"] == pytest.approx(11.3)
    assert breakdown["iteration_s"] == pytest.approx(5.2 + 7.9 + 3 * (7.7 + 11.3))
    assert model.score(g, d)[0] == pytest.approx(70.1)
    # G forward critical path: b's head 0.5 + upload 2, server 0.8 + 0.4, download 0.5, a's tail 1.
    assert breakdown["G_forward"]["client_compute"] == pytest.approx(1.5)
    assert breakdown["G_forward"]["upload"] == pytest.approx(2.0)
    assert breakdown["G_forward"]["server_compute"] == pytest.approx(1.2)
    assert breakdown["G_forward"]["download"] == pytest.approx(0.5)
    # D backward critical path: a's tail 6 + upload 2, server block 1 0.8, download 0.5, a's head 2.
    assert breakdown["D_backward"]["client_compute"] == pytest.approx(8.0)
    assert breakdown["D_backward"]["upload"] == pytest.approx(2.0)
    assert breakdown["D_backward"]["server_compute"] == pytest.approx(0.8)
    assert breakdown["D_backward"]["download"] == pytest.approx(0.5)


def _reference_pass(cuts, speed, rate, flops, out_bytes, server: ServerProfile, backward: bool) -> float:
    """METHOD.md's schedule written plainly, client by client (independent of the vectorised code)."""
    n = len(flops)
    server_of = [set(range(h, n - t)) for h, t in cuts]
    load = [sum(j in s for s in server_of) for j in range(n)]
    order = list(range(1, n - 1))[::-1] if backward else list(range(1, n - 1))
    done: dict[int, float] = {}
    for position, j in enumerate(order):
        ready = 0.0
        if position > 0 and load[order[position - 1]] > 0:
            ready = done[order[position - 1]]
        for i, (h, t) in enumerate(cuts):
            entry = n - t - 1 if backward else h
            if entry == j:
                local = range(n - t, n) if backward else range(h)
                cut_bytes = out_bytes[n - t - 1] if backward else out_bytes[h - 1]
                ready = max(ready, sum(flops[k] for k in local) / speed[i] + cut_bytes / rate[i])
        done[j] = ready + flops[j] * load[j] / server.flops_per_s
    finish = 0.0
    for i, (h, t) in enumerate(cuts):
        exit_block = h if backward else n - t - 1
        local = range(h) if backward else range(n - t, n)
        cut_bytes = out_bytes[h - 1] if backward else out_bytes[n - t - 1]
        arrive = done[exit_block] + cut_bytes / server.rate_bytes_per_s + sum(flops[k] for k in local) / speed[i]
        finish = max(finish, arrive)
    return finish


def _reference_iteration(gan: GanProfile, profiles: ProfileSet, names: list[str], g_cuts, d_cuts) -> float:
    speed = [profiles.device(n).flops_per_s for n in names]
    rate = [profiles.device(n).rate_bytes_per_s for n in names]
    total = 0.0
    for net, cuts, repeat in ((gan.generator, g_cuts, 1), (gan.discriminator, d_cuts, 3)):
        for backward, flops in ((False, net.forward_flops), (True, net.backward_flops)):
            total += repeat * _reference_pass(cuts, speed, rate, flops, net.output_bytes, profiles.server, backward)
    return total


SMALL_PROFILES = ProfileSet(
    ServerProfile(flops_per_s=5e9, rate_bytes_per_s=4e8),
    (DeviceProfile("slow", 500.0, 1.0, 5e7), DeviceProfile("mid", 2000.0, 2.0, 2e8), DeviceProfile("fast", 8000.0, 4.0, 8e8)),
)
SMALL_GAN = GanProfile(
    _network([2e8, 9e8, 3e8, 7e8, 1e8, 5e7], [3_000_000, 1_000_000, 4_000_000, 500_000, 200_000, 8]),
    _network([1e8, 6e8, 8e8, 2e7], [2_000_000, 3_000_000, 700_000, 256]),
)


def test_population_score_equals_each_individual_and_a_plain_reference() -> None:
    names = ["slow", "fast", "mid", "slow", "fast"]
    model = LatencyModel.build(SMALL_GAN, SMALL_PROFILES, names)
    rng = np.random.default_rng(7)
    g = rng.integers(0, model.generator.num_options, size=(40, len(names)))
    d = rng.integers(0, model.discriminator.num_options, size=(40, len(names)))
    together = model.score(g, d)
    alone = np.array([model.score(g[k : k + 1], d[k : k + 1])[0] for k in range(len(g))])
    g_options, d_options = model.generator.options, model.discriminator.options
    plain = [
        _reference_iteration(SMALL_GAN, SMALL_PROFILES, names, [g_options[o] for o in gi], [d_options[o] for o in di])
        for gi, di in zip(g, d)
    ]
    np.testing.assert_allclose(together, alone, rtol=1e-12)
    np.testing.assert_allclose(together, plain, rtol=1e-12)
    breakdown_totals = [model.breakdown(gi, di)["iteration_s"] for gi, di in zip(g[:10], d[:10])]
    np.testing.assert_allclose(breakdown_totals, together[:10], rtol=1e-12)


def test_exact_methods_agree_and_reach_the_enumerated_minimum() -> None:
    names = ["slow", "fast", "mid", "slow", "fast"]
    model = LatencyModel.build(SMALL_GAN, SMALL_PROFILES, names)
    by_clients = exact_optimum(model, "clients")
    by_groups = exact_optimum(model, "groups")
    by_milp = exact_optimum(model, "milp")
    assert by_groups.latency_s == pytest.approx(by_clients.latency_s, rel=1e-12)
    assert by_milp.latency_s == pytest.approx(by_clients.latency_s, rel=1e-9)
    rng = np.random.default_rng(0)
    g = rng.integers(0, model.generator.num_options, size=(2000, len(names)))
    d = rng.integers(0, model.discriminator.num_options, size=(2000, len(names)))
    assert model.score(g, d).min() >= by_clients.latency_s - 1e-12
    assert model.score(by_milp.g_genes[None], by_milp.d_genes[None])[0] == pytest.approx(by_milp.latency_s)


def test_exact_search_too_large_is_a_clear_error() -> None:
    model = LatencyModel.build(SMALL_GAN, SMALL_PROFILES, ["slow"] * 3 + ["mid"] * 3 + ["fast"] * 3)
    with pytest.raises(ExhaustiveError, match="over the limit"):
        exact_optimum(model, "clients", limit=1000)
    with pytest.raises(ExhaustiveError, match="Unknown exact method"):
        exact_optimum(model, "brute")


def test_network_with_fewer_than_three_blocks_is_rejected() -> None:
    two_blocks = _network([1e6, 1e6], [100, 8])
    with pytest.raises(PlanError, match="at least 3 blocks"):
        build_tables(two_blocks, HAND_PROFILES.devices, HAND_PROFILES.server)


def test_unknown_client_profile_is_rejected() -> None:
    with pytest.raises(PlanError, match="unknown device profile"):
        LatencyModel.build(GanProfile(HAND_NET, HAND_NET), HAND_PROFILES, ["a", "zz"])
