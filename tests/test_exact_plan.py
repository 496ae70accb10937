"""The exact plan source, restricted latency models and the like-for-like comparison with the reference GA."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import yaml

from huscf_lightning.config import PlanSpec
from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split.devices import load_profiles
from huscf_lightning.split.exhaustive import exact_optimum
from huscf_lightning.split.ga import GaSettings
from huscf_lightning.split.latency import LatencyModel
from huscf_lightning.split.plan import shared_block_head_tails
from huscf_lightning.split.profile import profile_gan
from huscf_lightning.split.reference import REFERENCE_HEAD_TAILS, compare_spaces, reference_ga
from huscf_lightning.split.selection import GanNetworks
from huscf_lightning.split.source import build_plan

ASSIGNMENT = ["d1", "d3", "d7", "d1", "d5"]


def _model(assignment: list[str], shared_d_block: bool = False) -> LatencyModel:
    gan = profile_gan(ReferenceGenerator(), ReferenceDiscriminator(), 64)
    return LatencyModel.build(gan, load_profiles("paper"), assignment, shared_d_block)


def _plan(source: str, shared_d_block: bool, **spec: object) -> tuple:
    return build_plan(
        PlanSpec(source=source, assignment=ASSIGNMENT, **spec),
        len(ASSIGNMENT),
        GanNetworks(ReferenceGenerator(), ReferenceDiscriminator()),
        seed=0,
        shared_d_block=shared_d_block,
        progress_bar=False,
    )


@pytest.mark.parametrize("shared_d_block", [False, True])
def test_exact_plan_reaches_the_enumerated_optimum_and_never_loses_to_the_ga(shared_d_block: bool) -> None:
    plan, report = _plan("exact", shared_d_block)
    enumerated = exact_optimum(_model(ASSIGNMENT, shared_d_block), "clients")  # 6^5 G x 6^5 (or 4^5) D assignments
    assert report["method"].startswith("exact")
    assert report["latency_s"] == pytest.approx(enumerated.latency_s, rel=1e-9)
    assert report["search"]["latency_s"] == pytest.approx(report["latency_s"], rel=1e-9)
    if shared_d_block:  # clustering reads features at the D block every client runs on the server
        assert set(plan.head_tails("D")) <= set(shared_block_head_tails(plan.d_blocks))
    _, ga = _plan("ga", shared_d_block, ga={"population": 60, "generations": 20, "polish": False})
    assert report["latency_s"] <= ga["latency_s"] + 1e-12


def test_exact_plan_under_clustering_is_no_faster_than_without() -> None:
    _, free = _plan("exact", False)
    _, shared = _plan("exact", True)
    assert free["latency_s"] <= shared["latency_s"] + 1e-12


def test_a_fit_config_with_the_exact_plan_source_parses_and_builds(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from huscf_lightning.cli.lightning_cli import run_cli

    config = tmp_path / "exact.yaml"
    config.write_text(yaml.safe_dump({"model": {"plan": {"source": "exact", "assignment": ASSIGNMENT}}}))
    with pytest.raises(SystemExit) as exit_:
        run_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code == 0
    plan_section = yaml.safe_load(capsys.readouterr().out)["model"]["plan"]
    spec = PlanSpec(**plan_section)
    spec.validate()
    plan, report = build_plan(spec, 5, GanNetworks(ReferenceGenerator(), ReferenceDiscriminator()), seed=0, progress_bar=False)
    assert spec.source == "exact" and plan.num_clients == 5
    assert report["latency_s"] == pytest.approx(exact_optimum(_model(ASSIGNMENT, True)).latency_s, rel=1e-9)


def test_a_restricted_model_scores_its_cuts_as_the_full_model_does() -> None:
    full = _model(ASSIGNMENT)
    space = full.restricted(REFERENCE_HEAD_TAILS, REFERENCE_HEAD_TAILS)
    assert space.generator.options == space.discriminator.options == REFERENCE_HEAD_TAILS
    rng = np.random.default_rng(0)
    g, d = rng.integers(0, 4, size=(200, 5)), rng.integers(0, 4, size=(200, 5))
    to_full = np.array([full.generator.options.index(o) for o in REFERENCE_HEAD_TAILS])
    np.testing.assert_allclose(space.score(g, d), full.score(to_full[g], to_full[d]), rtol=1e-12)


def test_reference_ga_finds_the_best_of_its_grouped_space() -> None:
    model = _model(["d1", "d2", "d3", "d4", "d6", "d7"])  # two gene tuples: clients 0-3 and 4-5
    space = model.restricted(REFERENCE_HEAD_TAILS, REFERENCE_HEAD_TAILS)
    grouped = np.array(list(itertools.product(range(4), repeat=4)))  # (g, d) of tuple 1, (g, d) of tuple 2
    g = np.repeat(grouped[:, [0, 2]], [4, 2], axis=1)
    d = np.repeat(grouped[:, [1, 3]], [4, 2], axis=1)
    best = float(space.score(g, d).min())
    settings = GaSettings(population=200, generations=40, elite=0, patience=40, polish=False)
    assert reference_ga(model, seed=0, settings=settings).best_score == pytest.approx(best, rel=1e-12)


def test_compare_spaces_labels_each_search_against_its_own_spaces_optimum() -> None:
    assignment = ["d1", "d3", "d7", "d1", "d5", "d2"]
    model = _model(assignment)
    ours = GaSettings(population=100, generations=60, patience=30)
    reference = GaSettings(population=100, generations=30, elite=0, patience=30, polish=False)
    result = compare_spaces(model, seed=1, ours=ours, reference=reference)
    in_space = exact_optimum(model.restricted(REFERENCE_HEAD_TAILS, REFERENCE_HEAD_TAILS), "groups").latency_s
    every_cut = exact_optimum(model, "groups").latency_s
    assert result.reference_space_exact == pytest.approx(in_space, rel=1e-9)
    assert result.every_cut_exact == pytest.approx(every_cut, rel=1e-9)
    assert result.reference_space_ours == pytest.approx(in_space, rel=1e-9)
    assert result.every_cut_ours == pytest.approx(every_cut, rel=1e-9)
    assert result.reference_space_reference_ga >= in_space - 1e-12
    assert in_space >= every_cut - 1e-12
    assert result.to_dict()["reference_ga_generations"] == 30
