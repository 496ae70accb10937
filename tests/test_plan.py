"""Cuts and split plans: the validity rule, plan sources, JSON round-trip, clear errors."""

from __future__ import annotations

import pytest

from huscf_lightning.split.plan import Cut, PlanError, SplitPlan, shared_block_head_tails, valid_head_tails


def test_valid_cuts_keep_labels_and_output_on_the_client_and_one_block_on_the_server() -> None:
    assert valid_head_tails(3) == [(1, 1)]
    assert valid_head_tails(5) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1)]
    assert len(valid_head_tails(8)) == 21  # h + t <= 7, h, t >= 1
    # the reference's choice space: head and tail 1 or 2, block 2 always on the server
    assert shared_block_head_tails(5) == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_plan_sources_and_json_round_trip() -> None:
    uniform = SplitPlan.uniform([2, 1, 1, 2], 3, 5, 5)
    assert [c.as_tuple() for c in uniform] == [(2, 1, 1, 2)] * 3
    explicit = SplitPlan.explicit([[1, 1, 1, 1], [2, 2, 1, 3], [3, 1, 2, 1]], 3, 5, 5)
    assert explicit.head_tails("G") == [(1, 1), (2, 2), (3, 1)] and explicit.head_tails("D") == [(1, 1), (1, 3), (2, 1)]
    for plan in (uniform, explicit, SplitPlan.random(7, 6, 5, seed=4, shared_block=False)):
        assert SplitPlan.from_json(plan.to_json()) == plan
        assert SplitPlan.from_dict(plan.to_dict()) == plan


def test_random_plans_are_seeded_and_keep_a_shared_server_block_when_asked() -> None:
    first, again, other = (SplitPlan.random(40, 5, 5, seed=s) for s in (1, 1, 2))
    assert first == again and first != other
    assert set(first.head_tails("G")) <= set(shared_block_head_tails(5))
    assert set(first.head_tails("D")) <= set(shared_block_head_tails(5))
    free = SplitPlan.random(200, 5, 5, seed=1, shared_block=False)
    assert set(free.head_tails("G")) == set(valid_head_tails(5))  # every valid cut gets drawn


def test_impossible_cuts_and_malformed_plans_are_clear_errors() -> None:
    with pytest.raises(PlanError, match=r"client 1, generator: cut \(head=3, tail=2\) is impossible .* head \+ tail <= 4"):
        SplitPlan((Cut(1, 1, 1, 1), Cut(3, 2, 1, 1)), 5, 5)
    with pytest.raises(PlanError, match="head >= 1, tail >= 1"):
        SplitPlan.uniform([0, 1, 1, 1], 2, 5, 5)
    with pytest.raises(PlanError, match="needs at least 3 blocks"):
        SplitPlan.uniform([1, 1, 1, 1], 2, 2, 5)
    with pytest.raises(PlanError, match="lists 2 cuts but there are 3 clients"):
        SplitPlan.explicit([[1, 1, 1, 1]] * 2, 3, 5, 5)
    with pytest.raises(PlanError, match="four numbers"):
        SplitPlan.uniform([1, 1, 1], 2, 5, 5)
    with pytest.raises(PlanError, match="at least one client"):
        SplitPlan.uniform([1, 1, 1, 1], 0, 5, 5)
    with pytest.raises(PlanError, match="keys 'g_blocks', 'd_blocks' and 'cuts'"):
        SplitPlan.from_dict({"cuts": [{"g_head": 1}], "g_blocks": 5, "d_blocks": 5})
    with pytest.raises(PlanError, match="not JSON"):
        SplitPlan.from_json("{cuts: ")
    with pytest.raises(PlanError, match="not an object"):
        SplitPlan.from_json("[1, 2]")
    with pytest.raises(PlanError, match="Unknown network 'E'"):
        Cut(1, 1, 1, 1).network("E")
