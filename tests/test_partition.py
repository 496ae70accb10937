"""Scenario partitioning: sizes and caps by hand, drawn proportions over many seeds, reproducibility, errors."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch

from huscf_lightning.data.partition import (
    DomainSpec,
    PartitionError,
    format_partition_table,
    partition_clients,
    partition_table,
    resolve_cap,
)


def balanced_labels(count: int, classes: int = 10) -> np.ndarray:
    return np.arange(count) % classes


def test_cap_rules() -> None:
    assert resolve_cap("paper", 80) == 750 and resolve_cap("paper", 40) == 1500
    assert resolve_cap("none", 8) is None and resolve_cap(None, 8) is None
    assert resolve_cap(300, 8) == 300 and resolve_cap("300", 8) == 300
    for bad in ("half", 0, -5, True):
        with pytest.raises(PartitionError, match="cap rule"):
            resolve_cap(bad, 8)


def test_paper_scenario6_iid_every_client_at_the_cap() -> None:
    names = ["mnist", "fashion_mnist", "kmnist", "notmnist"]
    labels = {name: balanced_labels(60000) for name in names}
    parts = partition_clients(labels, [DomainSpec(name, 20) for name in names], seed=0)
    assert [part.client for part in parts] == list(range(80))
    assert [part.domain for part in parts] == [name for name in names for _ in range(20)]
    assert all(part.size == 60000 // 80 and part.dropped_labels == () for part in parts)
    for name in names:  # clients of a domain hold disjoint images
        indices = torch.cat([part.indices for part in parts if part.domain == name])
        assert len(indices.unique()) == len(indices) == 20 * 750


def test_iid_below_the_cap_keeps_the_whole_equal_share() -> None:
    parts = partition_clients({"a": balanced_labels(1003)}, [DomainSpec("a", 4)], seed=1)  # cap 15000
    assert sorted(part.size for part in parts) == [250, 251, 251, 251]
    assert len(torch.cat([part.indices for part in parts]).unique()) == 1003


def test_a_single_client_keeps_everything_but_its_dropped_labels() -> None:
    for seed in range(5):
        (part,) = partition_clients({"a": balanced_labels(1000)}, [DomainSpec("a", 1, "noniid")], seed=seed)
        assert part.size_fraction == 1.0  # round(0.3 * 1) = 0 clients get the 2/3 cut
        assert part.size == 1000 - 100 * len(part.dropped_labels)


@pytest.mark.parametrize(
    ("distribution", "clients", "cuts"),
    [
        ("iid", 10, {1.0: 10}),
        ("noniid", 10, {1.0: 7, 2 / 3: 3}),
        ("noniid", 20, {1.0: 14, 2 / 3: 6}),
        ("highly_noniid", 10, {1.0: 5, 1 / 6: 2, 1 / 3: 3}),
        ("highly_noniid", 20, {1.0: 10, 1 / 6: 4, 1 / 3: 6}),
    ],
)
def test_sizes_are_the_kept_images_cut_by_fraction_of_the_cap(distribution: str, clients: int, cuts: dict) -> None:
    labels = balanced_labels(6000)
    specs = [DomainSpec("a", clients, distribution)]
    # With an unreachable cap every client keeps its whole share minus its dropped labels.
    uncapped = partition_clients({"a": labels}, specs, seed=3, cap=10**9)
    capped = partition_clients({"a": labels}, specs, seed=3, cap=200)
    own_share = partition_clients({"a": labels}, specs, seed=3, cap="none")
    assert Counter(part.size_fraction for part in capped) == cuts
    for whole, part, own in zip(uncapped, capped, own_share):
        assert whole.dropped_labels == part.dropped_labels == own.dropped_labels
        assert set(labels[whole.indices.numpy()].tolist()).isdisjoint(whole.dropped_labels)
        fraction = Fraction(part.size_fraction).limit_denominator(6)
        assert part.size == min(whole.size, int(200 * fraction))
        assert own.size == int(whole.size * fraction)
        assert set(part.indices.tolist()) <= set(whole.indices.tolist())
    assert len(torch.cat([part.indices for part in uncapped]).unique()) == sum(part.size for part in uncapped)


@pytest.mark.parametrize(
    ("distribution", "expected"),
    [("noniid", {0: 1 / 3, 2: 0.4, 3: 2 / 15, 4: 2 / 15}), ("highly_noniid", {2: 0.4, 3: 0.6})],
)
def test_dropped_label_counts_follow_the_normalised_weights(distribution: str, expected: dict[int, float]) -> None:
    labels = {"a": balanced_labels(400)}
    counts: Counter[int] = Counter()
    dropped_labels: Counter[int] = Counter()
    seeds = 200
    for seed in range(seeds):
        for part in partition_clients(labels, [DomainSpec("a", 20, distribution)], seed=seed):
            counts[len(part.dropped_labels)] += 1
            dropped_labels.update(part.dropped_labels)
    draws = seeds * 20
    assert set(counts) == set(expected)
    for value, probability in expected.items():
        assert counts[value] / draws == pytest.approx(probability, abs=4 * np.sqrt(probability * (1 - probability) / draws))
    # Which labels are dropped is uniform over the classes.
    label_share = np.array([dropped_labels[label] for label in range(10)]) / sum(dropped_labels.values())
    assert np.abs(label_share - 0.1).max() < 0.015


def test_same_seed_same_partition_other_seed_differs() -> None:
    labels = {"a": balanced_labels(3000), "b": balanced_labels(2000)}
    specs = [DomainSpec("a", 6, "noniid"), DomainSpec("b", 5, "highly_noniid")]
    first, again, other = (partition_clients(labels, specs, seed=s) for s in (7, 7, 8))
    assert partition_table(first) == partition_table(again)
    assert all(torch.equal(p.indices, q.indices) for p, q in zip(first, again))
    assert not all(torch.equal(p.indices, q.indices) for p, q in zip(first, other))


def test_each_domain_draws_from_its_own_stream() -> None:
    labels = {"a": balanced_labels(3000), "b": balanced_labels(2000)}
    base = partition_clients(labels, [DomainSpec("a", 6, "noniid"), DomainSpec("b", 5)], seed=2)
    changed = partition_clients(labels, [DomainSpec("a", 6, "noniid"), DomainSpec("b", 9)], seed=2)
    assert all(torch.equal(p.indices, q.indices) for p, q in zip(base[:6], changed[:6]))


def test_partition_table_rows_and_text() -> None:
    parts = partition_clients({"a": balanced_labels(100), "bb": balanced_labels(100)}, [DomainSpec("a", 2), DomainSpec("bb", 1, "highly_noniid")], seed=0, cap=40)
    rows = partition_table(parts)
    assert rows[0] == {"client": 0, "domain": "a", "size": 40, "size_fraction": 1.0, "dropped_labels": []}
    assert rows[2]["domain"] == "bb" and len(rows[2]["dropped_labels"]) in (2, 3)
    lines = format_partition_table(rows).splitlines()
    assert lines[0].split() == ["client", "domain", "size", "cap", "frac", "dropped", "labels"]
    assert len(lines) == 4 and lines[1].split() == ["0", "a", "40", "1", "-"]
    assert lines[3].split()[-1] == ",".join(str(label) for label in rows[2]["dropped_labels"])


def test_bad_scenarios_are_clear_errors() -> None:
    labels = {"a": balanced_labels(50)}
    with pytest.raises(PartitionError, match="Unknown data distribution 'skewed'.*iid, noniid, highly_noniid"):
        partition_clients(labels, [DomainSpec("a", 2, "skewed")], seed=0)
    with pytest.raises(PartitionError, match="50 training images but 51 clients"):
        partition_clients(labels, [DomainSpec("a", 51)], seed=0)
    with pytest.raises(PartitionError, match="at least 1 client"):
        partition_clients(labels, [DomainSpec("a", 0)], seed=0)
    with pytest.raises(PartitionError, match="No training labels given for domain 'b'"):
        partition_clients(labels, [DomainSpec("b", 2)], seed=0)
    with pytest.raises(PartitionError, match="only 3 classes"):
        partition_clients({"a": balanced_labels(50, classes=3)}, [DomainSpec("a", 2, "noniid")], seed=0)
    with pytest.raises(PartitionError, match="ends with no images"):
        partition_clients(labels, [DomainSpec("a", 10, "highly_noniid")], seed=0, cap=5)
    with pytest.raises(PartitionError, match="at least one domain"):
        partition_clients(labels, [], seed=0)
