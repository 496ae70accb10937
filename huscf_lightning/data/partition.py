"""Scenario partitioning: which training images of which domain each client holds.

METHOD.md "Data scenarios": each domain's training set is split equally among its clients, then
each client drops some labels (as its distribution says) and is capped. The cap rule:

- ``"paper"``: cap = 60000 // K for K clients in total (the paper's rule; 60000 is the size of
  an MNIST-family training set).
- ``"none"`` (or ``None``): no common cap; a client's share of its own (post-drop) data is
  still cut by its size fraction, so non-IID clients keep their size skew.
- an int ``c``: cap = c for every client (e.g. to balance small offline domains).

A client then keeps ``min(len(its data after dropping), floor(size_fraction * cap))`` images.
Everything is a pure function of its arguments and the seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import Tensor

from huscf_lightning.errors import HuSCFError

PAPER_POOL = 60000


class PartitionError(HuSCFError, ValueError):
    """A scenario that cannot be partitioned; the message names the fix."""


@dataclass
class DomainSpec:
    """One domain of a scenario: its name, how many clients hold it, how they are skewed.

    ``root`` and ``options`` go to the domain's loader (see ``huscf_lightning.data.loaders``).
    """

    name: str
    clients: int
    distribution: str = "iid"
    root: str | None = None
    options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.clients, int) or isinstance(self.clients, bool) or self.clients < 1:
            raise PartitionError(
                f"Domain {self.name!r} has clients={self.clients!r}; give it at least 1 client (a whole number)."
            )

    @classmethod
    def from_value(cls, spec: DomainSpec | Mapping[str, Any]) -> DomainSpec:
        """A spec from a config mapping; an unknown key is an error that lists the known ones."""
        if isinstance(spec, DomainSpec):
            return spec
        known = [f.name for f in fields(cls)]
        if not isinstance(spec, Mapping) or set(spec) - set(known) or "name" not in spec or "clients" not in spec:
            raise PartitionError(
                f"Each entry of data.domains is a mapping with keys name and clients (and optionally distribution, "
                f"root, options); got {spec!r}. Known keys: {known}."
            )
        return cls(**spec)


@dataclass(frozen=True)
class LabelSkew:
    """How a distribution skews clients: dropped-label counts and the share of clients per size cut."""

    dropped_counts: tuple[int, ...]
    dropped_weights: tuple[float, ...]
    size_fractions: tuple[tuple[Fraction, Fraction], ...] = ()  # (share of clients, fraction of the cap)

    def dropped_probabilities(self) -> np.ndarray:
        """The drop weights normalised to sum to one.

        METHOD.md's non-IID weights {.25, .3, .1, .1} sum to .75; like Python's
        ``random.choices``, which takes relative weights, we read them as relative and divide
        by their sum (so P(0 dropped) = 1/3, P(2) = .4, P(3) = P(4) = 2/15).
        """
        weights = np.asarray(self.dropped_weights, dtype=np.float64)
        return weights / weights.sum()


DISTRIBUTIONS: dict[str, LabelSkew] = {
    "iid": LabelSkew((0,), (1.0,)),
    "noniid": LabelSkew((0, 2, 3, 4), (0.25, 0.3, 0.1, 0.1), ((Fraction(3, 10), Fraction(2, 3)),)),
    "highly_noniid": LabelSkew(
        (2, 3), (0.4, 0.6), ((Fraction(2, 10), Fraction(1, 6)), (Fraction(3, 10), Fraction(1, 3)))
    ),
}


@dataclass(frozen=True, eq=False)
class ClientPartition:
    """One client's data: its domain, indices into that domain's train set, what it lacks."""

    client: int
    domain: str
    indices: Tensor
    dropped_labels: tuple[int, ...] = ()
    size_fraction: float = 1.0

    @property
    def size(self) -> int:
        return len(self.indices)


def check_distribution(name: str) -> LabelSkew:
    """The skew of distribution ``name``; a clear error naming the known ones otherwise."""
    if name not in DISTRIBUTIONS:
        raise PartitionError(
            f"Unknown data distribution {name!r}; use one of {', '.join(DISTRIBUTIONS)} "
            f"(data.domains[].distribution)."
        )
    return DISTRIBUTIONS[name]


def resolve_cap(cap: str | int | None, total_clients: int) -> int | None:
    """The per-client cap for a cap rule ("paper", "none"/None or an int); None means no cap."""
    if cap is None or cap == "none":
        return None
    if cap == "paper":
        return PAPER_POOL // total_clients
    if isinstance(cap, str) and cap.isdigit():
        cap = int(cap)
    if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1:
        return cap
    raise PartitionError(f"Unknown cap rule {cap!r}; use 'paper' (60000 // clients), 'none', or a positive int.")


def _size_fractions(skew: LabelSkew, clients: int, rng: np.random.Generator) -> list[Fraction]:
    """Per client its fraction of the cap: round(share * clients) random clients per size cut."""
    fractions = [Fraction(1)] * clients
    order = rng.permutation(clients)
    start = 0
    for share, fraction in skew.size_fractions:
        count = int(share * clients + Fraction(1, 2))
        for client in order[start : start + count]:
            fractions[client] = fraction
        start += count
    return fractions


def _partition_domain(
    spec: DomainSpec, labels: np.ndarray, cap: int | None, first_client: int, rng: np.random.Generator
) -> list[ClientPartition]:
    skew = check_distribution(spec.distribution)
    if spec.clients > len(labels):
        raise PartitionError(
            f"Domain {spec.name!r} has {len(labels)} training images but {spec.clients} clients; "
            f"give it at most {len(labels)} clients (each client needs its own images)."
        )
    classes = np.unique(labels)
    if max(skew.dropped_counts) >= len(classes):
        raise PartitionError(
            f"Distribution {spec.distribution!r} drops up to {max(skew.dropped_counts)} labels but domain "
            f"{spec.name!r} has only {len(classes)} classes; use a milder distribution for it."
        )
    chunks = np.array_split(rng.permutation(len(labels)), spec.clients)
    dropped_counts = rng.choice(skew.dropped_counts, size=spec.clients, p=skew.dropped_probabilities())
    fractions = _size_fractions(skew, spec.clients, rng)
    parts = []
    for offset, (chunk, dropped_count, fraction) in enumerate(zip(chunks, dropped_counts, fractions)):
        dropped = np.sort(rng.choice(classes, size=int(dropped_count), replace=False))
        kept = chunk[~np.isin(labels[chunk], dropped)]
        limit = len(kept) * fraction if cap is None else cap * fraction
        size = min(len(kept), int(limit))
        if size < 1:
            raise PartitionError(
                f"Client {first_client + offset} of domain {spec.name!r} ends with no images (it holds "
                f"{len(chunk)} before dropping labels {dropped.tolist()}, cap fraction {fraction}); give the "
                f"domain fewer clients or a larger cap."
            )
        parts.append(
            ClientPartition(
                client=first_client + offset,
                domain=spec.name,
                indices=torch.from_numpy(np.sort(kept[:size])).long(),
                dropped_labels=tuple(int(label) for label in dropped),
                size_fraction=float(fraction),
            )
        )
    return parts


def partition_clients(
    train_labels: Mapping[str, Tensor | np.ndarray],
    domains: Sequence[DomainSpec],
    seed: int,
    cap: str | int | None = "paper",
) -> list[ClientPartition]:
    """Split every domain's training set among its clients as the scenario says (pure, seeded).

    Clients are numbered in the order of ``domains``. Each domain draws from its own stream
    (seed, domain position), so changing one domain's entry leaves the others' clients as they were.
    """
    if not domains:
        raise PartitionError("A scenario needs at least one domain (data.domains is empty).")
    for spec in domains:
        check_distribution(spec.distribution)
        if spec.name not in train_labels:
            raise PartitionError(f"No training labels given for domain {spec.name!r}; load it first.")
    total = sum(spec.clients for spec in domains)
    per_client_cap = resolve_cap(cap, max(total, 1))
    parts: list[ClientPartition] = []
    for position, spec in enumerate(domains):
        labels = np.asarray(train_labels[spec.name])
        rng = np.random.default_rng([seed, position])
        parts += _partition_domain(spec, labels, per_client_cap, len(parts), rng)
    return parts


def partition_table(parts: Sequence[ClientPartition]) -> list[dict[str, Any]]:
    """Per client: index, domain, size, size fraction of the cap and dropped labels (JSON-ready)."""
    return [
        {
            "client": part.client,
            "domain": part.domain,
            "size": part.size,
            "size_fraction": round(part.size_fraction, 4),
            "dropped_labels": list(part.dropped_labels),
        }
        for part in parts
    ]


def format_partition_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The partition table as aligned text, one line per client, for logs and the console."""
    header = ("client", "domain", "size", "cap frac", "dropped labels")
    cells = [
        (
            str(row["client"]),
            str(row["domain"]),
            str(row["size"]),
            f"{row['size_fraction']:.3g}",
            ",".join(str(label) for label in row["dropped_labels"]) or "-",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in [header, *cells]]
    return "\n".join(lines)
