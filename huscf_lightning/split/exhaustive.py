"""Exact cut optima: to check the GA, and to use instead of it where they are affordable.

Three exact methods, all over the same `LatencyModel`:

- ``clients``: every option of every client (options ** clients per network);
- ``groups``: clients of one device type are interchangeable, so only how many of each type take
  each option matters; enumerate those count vectors (product over types of
  C(size + options - 1, options - 1) per network);
- ``milp``: the event schedule written as a mixed-integer linear programme over the same counts
  and solved by HiGHS (scipy.optimize.milp); exact at any size the solver finishes.

The iteration latency is G time + 3 x D time and a client's G and D cuts are independent, so each
network is optimised on its own.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from huscf_lightning.errors import HuSCFError

from .latency import D_PASSES, LatencyModel, NetworkTables, network_latency

DEFAULT_LIMIT = 5_000_000
AUTO_ENUMERATE_UP_TO = 100_000  # beyond this the MILP is faster than scoring every count vector
CHUNK = 20_000
METHODS = ("auto", "clients", "groups", "milp")


class ExhaustiveError(HuSCFError, ValueError):
    """An exact search that cannot run (too large, unknown method); the message names the fix."""


@dataclass(frozen=True)
class ExactResult:
    """Optimal per-client option indices of G and D, their latency and how they were found."""

    g_genes: np.ndarray
    d_genes: np.ndarray
    latency_s: float
    method: str
    candidates: int  # assignments scored (enumeration) or 0 (milp)
    wall_s: float

    def to_dict(self) -> dict:
        return {"latency_s": self.latency_s, "method": self.method, "candidates": self.candidates, "wall_s": self.wall_s}


def client_space_size(model: LatencyModel, net: str) -> int:
    """Assignments of one network enumerated by the ``clients`` method."""
    return model.tables(net).num_options ** model.num_clients


def group_space_size(model: LatencyModel, net: str) -> int:
    """Count vectors of one network enumerated by the ``groups`` method."""
    options = model.tables(net).num_options
    return math.prod(math.comb(int(size) + options - 1, options - 1) for size in model.group_sizes())


def compositions(total: int, parts: int) -> np.ndarray:
    """All (count, parts) non-negative int vectors summing to ``total`` (stars and bars)."""
    rows = []
    for bars in itertools.combinations(range(total + parts - 1), parts - 1):
        edges = (-1, *bars, total + parts - 1)
        rows.append([edges[k + 1] - edges[k] - 1 for k in range(parts)])
    return np.array(rows, dtype=np.int64).reshape(-1, parts)


def _check_size(size: int, limit: int, method: str, net: str) -> None:
    if size > limit:
        raise ExhaustiveError(
            f"Exact search by {method} would score {size:.3g} assignments of {net}, over the limit "
            f"{limit:.3g}. Use method 'milp' (exact, solver based), raise the limit if you can wait, "
            f"or use the GA."
        )


def _best_by_clients(model: LatencyModel, net: str, limit: int) -> tuple[np.ndarray, float, int]:
    tables = model.tables(net)
    size = client_space_size(model, net)
    _check_size(size, limit, "clients", net)
    best_score, best = math.inf, None
    radix = tables.num_options ** np.arange(model.num_clients)
    for start in range(0, size, CHUNK):
        index = np.arange(start, min(start + CHUNK, size))
        genes = (index[:, None] // radix[None, :]) % tables.num_options
        scores = network_latency(model.counts(genes, net), tables)
        k = int(np.argmin(scores))
        if scores[k] < best_score:
            best_score, best = float(scores[k]), genes[k]
    return best, best_score, size


def _genes_from_counts(model: LatencyModel, counts: np.ndarray) -> np.ndarray:
    """Per-client option indices realising (groups, options) counts, clients of a type in order."""
    genes = np.empty(model.num_clients, dtype=np.int64)
    for group in range(model.num_groups):
        members = np.flatnonzero(model.client_groups == group)
        genes[members] = np.repeat(np.arange(counts.shape[1]), counts[group])
    return genes


def _best_by_groups(model: LatencyModel, net: str, limit: int) -> tuple[np.ndarray, float, int]:
    tables = model.tables(net)
    size = group_space_size(model, net)
    _check_size(size, limit, "groups", net)
    per_group = [compositions(int(s), tables.num_options) for s in model.group_sizes()]
    radix = np.cumprod([1] + [len(c) for c in per_group[:-1]])
    best_score, best = math.inf, None
    for start in range(0, size, CHUNK):
        index = np.arange(start, min(start + CHUNK, size))
        counts = np.stack(
            [choices[(index // r) % len(choices)] for choices, r in zip(per_group, radix)], axis=1
        )  # (chunk, groups, options)
        scores = network_latency(counts, tables)
        k = int(np.argmin(scores))
        if scores[k] < best_score:
            best_score, best = float(scores[k]), counts[k]
    return _genes_from_counts(model, best), best_score, size


class _Programme:
    """Rows of a MILP built by variable name; a small helper so the model reads like the maths."""

    def __init__(self) -> None:
        self.index: dict[tuple, int] = {}
        self.rows: list[dict[int, float]] = []
        self.lower: list[float] = []
        self.upper: list[float] = []

    def var(self, *name: object) -> int:
        return self.index.setdefault(name, len(self.index))

    def add(self, terms: list[tuple[int, float]], lower: float, upper: float) -> None:
        row: dict[int, float] = {}
        for column, value in terms:
            row[column] = row.get(column, 0.0) + value
        self.rows.append(row)
        self.lower.append(lower)
        self.upper.append(upper)

    def matrix(self) -> np.ndarray:
        dense = np.zeros((len(self.rows), len(self.index)))
        for r, row in enumerate(self.rows):
            for column, value in row.items():
                dense[r, column] = value
        return dense


def _milp_network(tables: NetworkTables, sizes: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact optimum of one network's forward + backward time over per-type option counts.

    Variables: n[g,o] clients of type g on option o; y[g,o] = 1 if any (n <= size*y); z[j] = 1 if
    block j runs on the server (load <= K*z); per pass ready/done per server block and the pass time
    T. The schedule's maxima become lower bounds (ready >= arrival*y; ready >= done_prev - M(1-z);
    T >= done_exit + finish - M(1-y)), which minimising T makes tight. Setting y or z to 1 without
    need only adds constraints, so the optimum is the schedule's true minimum.
    """
    p = _Programme()
    groups, options, blocks = range(len(sizes)), range(tables.num_options), range(tables.cover.shape[1])
    total = int(sizes.sum())
    for g in groups:
        p.add([(p.var("n", g, o), 1.0) for o in options], float(sizes[g]), float(sizes[g]))
        for o in options:
            p.add([(p.var("n", g, o), 1.0), (p.var("y", g, o), -float(sizes[g]))], -np.inf, 0.0)
    for j in blocks:
        using = [(p.var("n", g, o), 1.0) for g in groups for o in options if tables.cover[o, j]]
        p.add([*using, (p.var("z", j), -float(total))], -np.inf, 0.0)
    integer_columns = len(p.index)
    for phase, t in tables.passes().items():
        arrival = t.start_compute + t.upload
        finish = t.download[None, :] + t.end_compute
        big = float(t.block_cost.sum() * total + arrival.max() + finish.max())
        previous = None
        for j in t.block_order:
            load = [(p.var("n", g, o), -float(t.block_cost[j])) for g in groups for o in options if tables.cover[o, j]]
            p.add([(p.var("done", phase, j), 1.0), (p.var("ready", phase, j), -1.0), *load], 0.0, 0.0)
            for g in groups:
                for o in np.flatnonzero(t.entry == j):
                    p.add([(p.var("ready", phase, j), 1.0), (p.var("y", g, o), -float(arrival[g, o]))], 0.0, np.inf)
            if previous is not None:
                terms = [(p.var("ready", phase, j), 1.0), (p.var("done", phase, previous), -1.0), (p.var("z", previous), -big)]
                p.add(terms, -big, np.inf)
            previous = j
        for g in groups:
            for o in options:
                terms = [(p.var("T", phase), 1.0), (p.var("done", phase, int(t.exit[o])), -1.0), (p.var("y", g, o), -big)]
                p.add(terms, float(finish[g, o]) - big, np.inf)
    columns = len(p.index)
    cost = np.zeros(columns)
    cost[[p.var("T", phase) for phase in ("forward", "backward")]] = 1.0
    upper = np.full(columns, np.inf)
    for (kind, *key), column in p.index.items():
        if kind == "n":
            upper[column] = float(sizes[key[0]])
        elif kind in ("y", "z"):
            upper[column] = 1.0
    integrality = (np.arange(columns) < integer_columns).astype(int)
    result = milp(
        cost,
        constraints=LinearConstraint(p.matrix(), p.lower, p.upper),
        integrality=integrality,
        bounds=Bounds(np.zeros(columns), upper),
        options={"mip_rel_gap": 1e-9},
    )
    if not result.success:
        raise ExhaustiveError(f"The MILP solver did not finish ({result.message}); use the GA or enumeration instead.")
    counts = np.array([[round(result.x[p.var("n", g, o)]) for o in options] for g in groups], dtype=np.int64)
    return counts, float(network_latency(counts[None], tables)[0])


def _best_by_milp(model: LatencyModel, net: str) -> tuple[np.ndarray, float, int]:
    counts, score = _milp_network(model.tables(net), model.group_sizes())
    return _genes_from_counts(model, counts), score, 0


def exact_optimum(model: LatencyModel, method: str = "auto", limit: int = DEFAULT_LIMIT) -> ExactResult:
    """The minimum iteration latency and per-client cuts achieving it.

    ``auto`` enumerates by groups when that is at most `AUTO_ENUMERATE_UP_TO` count vectors per
    network, else solves the MILP; the result says which method ran. ``limit`` caps enumeration.
    """
    if method not in METHODS:
        raise ExhaustiveError(f"Unknown exact method {method!r}; use one of {list(METHODS)}.")
    started = time.perf_counter()
    found = {}
    for net in ("G", "D"):
        chosen = method
        if method == "auto":
            chosen = "groups" if group_space_size(model, net) <= min(limit, AUTO_ENUMERATE_UP_TO) else "milp"
        if chosen == "clients":
            found[net] = (*_best_by_clients(model, net, limit), chosen)
        elif chosen == "groups":
            found[net] = (*_best_by_groups(model, net, limit), chosen)
        else:
            found[net] = (*_best_by_milp(model, net), chosen)
    (g_genes, g_score, g_count, g_method), (d_genes, d_score, d_count, d_method) = found["G"], found["D"]
    used = g_method if g_method == d_method else f"G: {g_method}, D: {d_method}"
    return ExactResult(
        g_genes=g_genes,
        d_genes=d_genes,
        latency_s=g_score + D_PASSES * d_score,
        method=used,
        candidates=g_count + d_count,
        wall_s=time.perf_counter() - started,
    )
