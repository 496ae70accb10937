"""Latency model of one training iteration (METHOD.md, "Cut selection"), vectorised over populations.

Each network pass is an event schedule over the server blocks: a server block starts when the
previous server block is done (if anyone runs that one on the server) and every client whose
part ends just before it has delivered; it then runs once over all clients that use it. A client's
remaining part starts after the server block it waits on is done plus the download. Backward is
the same schedule in reverse. Iteration latency = G forward + G backward + 3 x (D forward + D
backward), since D runs three times per iteration (fake, real, G step).

Clients of one device type are interchangeable, so a pass depends only on how many clients of each
device type take each (head, tail) option: scoring works on those counts, shape
(population, device types, options), for a whole population at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .devices import DeviceProfile, ProfileSet, ServerProfile
from .plan import PlanError, shared_block_head_tails, valid_head_tails
from .profile import GanProfile, NetworkProfile

D_PASSES = 3
COMPONENTS = ("client_compute", "upload", "server_compute", "download")


@dataclass(frozen=True)
class PassTables:
    """Time constants of one pass (forward or backward) of one network.

    ``start_compute`` and ``upload`` are the client's work before its first server block (head in
    forward, tail in backward); ``download`` and ``end_compute`` its work after its last one.
    ``entry[o]``/``exit[o]`` are the first/last server block option ``o`` uses in this pass's order.
    """

    start_compute: np.ndarray  # (groups, options) seconds
    upload: np.ndarray  # (groups, options) seconds
    download: np.ndarray  # (options,) seconds
    end_compute: np.ndarray  # (groups, options) seconds
    entry: np.ndarray  # (options,) block index
    exit: np.ndarray  # (options,) block index
    block_order: tuple[int, ...]  # server blocks in the order this pass visits them
    block_cost: np.ndarray  # (blocks,) server seconds per client running the block


@dataclass(frozen=True)
class NetworkTables:
    """Everything the schedule needs about one network under one set of device types."""

    options: tuple[tuple[int, int], ...]
    cover: np.ndarray  # (options, blocks): option o runs block j on the server
    forward: PassTables
    backward: PassTables

    @property
    def num_options(self) -> int:
        return len(self.options)

    def passes(self) -> dict[str, PassTables]:
        return {"forward": self.forward, "backward": self.backward}


def build_tables(
    net: NetworkProfile,
    devices: Sequence[DeviceProfile],
    server: ServerProfile,
    options: Sequence[tuple[int, int]] | None = None,
) -> NetworkTables:
    """Per (device type, option) client times and per-block server costs of ``net``.

    ``options``: the (head, tail) pairs a client may choose; default every valid one.
    """
    n = net.num_blocks
    if n < 3:
        raise PlanError(
            f"A network of {n} blocks cannot be split into client head, server part and client tail; "
            f"the latency model needs at least 3 blocks."
        )
    options = tuple(valid_head_tails(n) if options is None else options)
    heads = np.array([h for h, _ in options])
    tails = np.array([t for _, t in options])
    first_server = heads
    last_server = n - tails - 1
    blocks = np.arange(n)
    cover = (blocks[None, :] >= first_server[:, None]) & (blocks[None, :] <= last_server[:, None])
    head_mask = (blocks[None, :] < heads[:, None]).astype(float)  # (options, blocks)
    tail_mask = (blocks[None, :] > last_server[:, None]).astype(float)
    fwd = np.asarray(net.forward_flops, dtype=float)
    bwd = np.asarray(net.backward_flops, dtype=float)
    out_bytes = np.asarray(net.output_bytes, dtype=float)
    speed = np.array([d.flops_per_s for d in devices])[:, None]  # (groups, 1)
    rate = np.array([d.rate_bytes_per_s for d in devices])[:, None]
    head_bytes = out_bytes[heads - 1]  # crosses the head cut (activation forward, gradient backward)
    tail_bytes = out_bytes[last_server]  # crosses the tail cut
    server_blocks = tuple(range(1, n - 1))
    forward = PassTables(
        start_compute=(head_mask @ fwd)[None, :] / speed,
        upload=head_bytes[None, :] / rate,
        download=tail_bytes / server.rate_bytes_per_s,
        end_compute=(tail_mask @ fwd)[None, :] / speed,
        entry=first_server,
        exit=last_server,
        block_order=server_blocks,
        block_cost=fwd / server.flops_per_s,
    )
    backward = PassTables(
        start_compute=(tail_mask @ bwd)[None, :] / speed,
        upload=tail_bytes[None, :] / rate,
        download=head_bytes / server.rate_bytes_per_s,
        end_compute=(head_mask @ bwd)[None, :] / speed,
        entry=last_server,
        exit=first_server,
        block_order=server_blocks[::-1],
        block_cost=bwd / server.flops_per_s,
    )
    return NetworkTables(options, cover, forward, backward)


def restrict_tables(tables: NetworkTables, options: Sequence[tuple[int, int]]) -> NetworkTables:
    """The same network with clients limited to ``options`` (a subset of ``tables.options``, in the
    order given): every per-option row is selected, the per-block server costs stay as they are."""
    missing = [o for o in options if tuple(o) not in tables.options]
    if missing:
        raise PlanError(
            f"Cut option(s) {missing} are not valid (head, tail) pairs of this network; "
            f"use some of {list(tables.options)}."
        )
    rows = np.array([tables.options.index(tuple(o)) for o in options], dtype=np.int64)

    def select(t: PassTables) -> PassTables:
        return replace(
            t,
            start_compute=t.start_compute[:, rows],
            upload=t.upload[:, rows],
            download=t.download[rows],
            end_compute=t.end_compute[:, rows],
            entry=t.entry[rows],
            exit=t.exit[rows],
        )

    return NetworkTables(tuple(tables.options[r] for r in rows), tables.cover[rows], select(tables.forward), select(tables.backward))


def counts_from_genes(genes: np.ndarray, client_groups: np.ndarray, num_groups: int, num_options: int) -> np.ndarray:
    """(population, clients) option indices -> (population, groups, options) client counts."""
    genes = np.asarray(genes)
    population = genes.shape[0]
    flat = (np.arange(population)[:, None] * num_groups + client_groups[None, :]) * num_options + genes
    counts = np.bincount(flat.ravel(), minlength=population * num_groups * num_options)
    return counts.reshape(population, num_groups, num_options)


def server_load(counts: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """(population, blocks): how many clients run each block on the server."""
    return counts.sum(axis=1) @ cover.astype(counts.dtype)


def _server_done(arrival: np.ndarray, load: np.ndarray, tables: PassTables) -> np.ndarray:
    """(population, blocks) done time of every server block; ``arrival`` is (population, options)."""
    done = np.zeros(load.shape, dtype=float)
    previous = None
    for j in tables.block_order:
        entering = np.flatnonzero(tables.entry == j)
        ready = arrival[:, entering].max(axis=1) if entering.size else np.zeros(load.shape[0])
        if previous is not None:
            ready = np.maximum(ready, np.where(load[:, previous] > 0, done[:, previous], 0.0))
        done[:, j] = ready + tables.block_cost[j] * load[:, j]
        previous = j
    return done


def pass_latency(counts: np.ndarray, load: np.ndarray, tables: PassTables) -> np.ndarray:
    """(population,) time of one pass, from counts (population, groups, options)."""
    present = counts > 0
    arrival = np.where(present, tables.start_compute + tables.upload, 0.0).max(axis=1)
    finish = np.where(present, tables.download[None, :] + tables.end_compute, -np.inf).max(axis=1)
    done = _server_done(arrival, load, tables)
    return (done[:, tables.exit] + finish).max(axis=1)


def network_latency(counts: np.ndarray, tables: NetworkTables) -> np.ndarray:
    """(population,) forward + backward time of one network from (population, groups, options) counts."""
    load = server_load(counts, tables.cover)
    return pass_latency(counts, load, tables.forward) + pass_latency(counts, load, tables.backward)


def _critical_path(counts: np.ndarray, tables: PassTables, load: np.ndarray) -> dict[str, float]:
    """Split one pass's time along its critical path into client compute, upload, server, download."""
    present = counts > 0
    arrival_by = np.where(present, tables.start_compute + tables.upload, 0.0)  # (groups, options)
    done = _server_done(arrival_by.max(axis=0)[None, :], load[None, :], tables)[0]
    finish_by = np.where(present, tables.download[None, :] + tables.end_compute + done[tables.exit][None, :], -np.inf)
    group, option = np.unravel_index(np.argmax(finish_by), finish_by.shape)
    parts = dict.fromkeys(COMPONENTS, 0.0)
    parts["client_compute"] += float(tables.end_compute[group, option])
    parts["download"] += float(tables.download[option])
    position = tables.block_order.index(int(tables.exit[option]))
    while True:
        j = tables.block_order[position]
        parts["server_compute"] += float(tables.block_cost[j] * load[j])
        entering = np.where(present & (tables.entry[None, :] == j), arrival_by, -np.inf)
        previous = tables.block_order[position - 1] if position > 0 else None
        chained = done[previous] if previous is not None and load[previous] > 0 else -np.inf
        if chained >= entering.max():
            position -= 1
            continue
        group, option = np.unravel_index(np.argmax(entering), entering.shape)
        parts["client_compute"] += float(tables.start_compute[group, option])
        parts["upload"] += float(tables.upload[group, option])
        return parts


@dataclass(frozen=True)
class LatencyModel:
    """The latency of any cut assignment for a fixed GAN profile, device set and client assignment.

    Genes are per-client indices into ``generator.options`` / ``discriminator.options``
    (`valid_head_tails` order).
    """

    generator: NetworkTables
    discriminator: NetworkTables
    client_groups: np.ndarray  # (clients,) index into group_names
    group_names: tuple[str, ...]

    @classmethod
    def build(
        cls, gan: GanProfile, profiles: ProfileSet, client_profiles: Sequence[str], shared_d_block: bool = False
    ) -> LatencyModel:
        """``shared_d_block`` limits D cuts to those keeping the middle block on the server for every
        client (`shared_block_head_tails`), which clustered aggregation needs for its features."""
        names = profiles.names
        unknown = sorted(set(client_profiles) - set(names))
        if unknown:
            raise PlanError(f"Clients use unknown device profile(s) {unknown}; known: {names}.")
        groups = np.array([names.index(p) for p in client_profiles], dtype=np.int64)
        return cls(
            generator=build_tables(gan.generator, profiles.devices, profiles.server),
            discriminator=build_tables(
                gan.discriminator,
                profiles.devices,
                profiles.server,
                shared_block_head_tails(gan.discriminator.num_blocks) if shared_d_block else None,
            ),
            client_groups=groups,
            group_names=tuple(names),
        )

    def restricted(self, g_options: Sequence[tuple[int, int]], d_options: Sequence[tuple[int, int]]) -> LatencyModel:
        """This model with every client's G and D cuts limited to the given (head, tail) options, to
        search or solve a smaller space (the reference's heads and tails of 1 or 2, say)."""
        return replace(
            self,
            generator=restrict_tables(self.generator, g_options),
            discriminator=restrict_tables(self.discriminator, d_options),
        )

    @property
    def num_clients(self) -> int:
        return int(self.client_groups.size)

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    def group_sizes(self) -> np.ndarray:
        return np.bincount(self.client_groups, minlength=self.num_groups)

    def counts(self, genes: np.ndarray, net: str) -> np.ndarray:
        tables = self.tables(net)
        return counts_from_genes(np.atleast_2d(genes), self.client_groups, self.num_groups, tables.num_options)

    def tables(self, net: str) -> NetworkTables:
        if net == "G":
            return self.generator
        if net == "D":
            return self.discriminator
        raise PlanError(f"Unknown network {net!r}; use 'G' or 'D'.")

    def score_counts(self, g_counts: np.ndarray, d_counts: np.ndarray) -> np.ndarray:
        """(population,) iteration latency from per-network (population, groups, options) counts."""
        return network_latency(g_counts, self.generator) + D_PASSES * network_latency(d_counts, self.discriminator)

    def score(self, g_genes: np.ndarray, d_genes: np.ndarray) -> np.ndarray:
        """(population,) iteration latency of (population, clients) G and D option indices."""
        return self.score_counts(self.counts(g_genes, "G"), self.counts(d_genes, "D"))

    def breakdown(self, g_genes: Sequence[int], d_genes: Sequence[int]) -> dict:
        """Per network and pass: time split along the critical path, plus the iteration total."""
        result: dict = {}
        total = 0.0
        for net, genes, repeat in (("G", g_genes, 1), ("D", d_genes, D_PASSES)):
            tables = self.tables(net)
            counts = self.counts(np.asarray(genes), net)[0]
            load = server_load(counts[None], tables.cover)[0]
            for phase, pass_tables in tables.passes().items():
                parts = _critical_path(counts, pass_tables, load)
                seconds = sum(parts.values())
                result[f"{net}_{phase}"] = {**parts, "seconds": seconds, "times_per_iteration": repeat}
                total += repeat * seconds
        result["iteration_s"] = total
        return result

    def client_busy_s(self, g_genes: Sequence[int], d_genes: Sequence[int]) -> np.ndarray:
        """(clients,) per-iteration time each client spends computing or transferring."""
        busy = np.zeros(self.num_clients)
        for net, genes, repeat in (("G", g_genes, 1), ("D", d_genes, D_PASSES)):
            for pass_tables in self.tables(net).passes().values():
                per_option = pass_tables.start_compute + pass_tables.upload + pass_tables.download + pass_tables.end_compute
                busy += repeat * per_option[self.client_groups, np.asarray(genes)]
        return busy
