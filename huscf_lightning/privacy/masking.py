"""Masked aggregation: the server sums the clients' weights without being able to read them.

Secure aggregation in the style of Bonawitz et al. (CCS 2017), written here because no installed library does
it on stacked torch tensors. A client's contribution to its group's average, w_k x_k, is encoded in fixed
point (int64, `FRACTION_BITS` bits after the point) and masked modulo 2^64 (int64 wrap-around):

    y_k = encode(w_k x_k) + r(k, next(k)) - r(prev(k), k) + [k leads its group] m_g

where ``r(a, b)`` is a uniform int64 stream from a key clients a and b share (neighbours on a ring over the
group's members) and ``m_g`` one from a key all members of group g share. The ring terms cancel in the group's
sum; the server adds the y_k of each group and returns S_g = sum_k encode(w_k x_k) + m_g, which only members
can unmask. With ``readable=True`` (the server's own blocks, whose average it loads) there is no group mask:
the server reads the sum, never a single client's value.

What it protects against: a server that follows the protocol but reads all it handles sees uniformly random
int64 values, for every client and every group. What it does not: a server colluding with a group member
(the member knows m_g, so the group's average, and with both of a client's ring neighbours, that client's
value); clients that drop out mid-aggregation (no secret-sharing recovery as in Bonawitz et al.: a round's
participants must all report); a malicious server that changes the sums; what the average itself reveals
(a group of one is its member's weights, to its member). The keys come from a key agreement the server is no
party to; in this one-process simulation they are derived from a secret seed the server code never reads.

Exactness: the masks cancel exactly (integer arithmetic), so the result is the fixed-point average, which is
within K 2^-(FRACTION_BITS+1) of the floating one; values must stay below 2^(62 - FRACTION_BITS) in magnitude.
Integer tensors (batch-norm counters) are not masked: they take the largest count, as unmasked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from huscf_lightning.errors import HuSCFError

FRACTION_BITS = 44
LIMIT = 2.0 ** (62 - FRACTION_BITS)  # the largest magnitude a masked value may have
_SCALE = 2.0**FRACTION_BITS
_LOW, _HIGH = -(2**63), 2**63 - 1
MASKED_VALUE_BYTES = 8  # a masked floating value crosses as one int64


class MaskingError(HuSCFError, ValueError):
    """Weights or values that masked aggregation cannot carry; the message names the fix."""


@dataclass(frozen=True)
class MaskSession:
    """The keys of one aggregation: the clients' secret, the round and the network (each aggregation's masks
    are fresh). ``clients`` are identified by their column in the round's weights, the same on every process."""

    secret: int
    round_index: int
    network: str

    def stream(self, kind: str, *ids: int, numel: int) -> Tensor:
        """A uniform int64 stream of ``numel`` values from the key (``kind``, ``ids``) of this aggregation."""
        seed = key_seed(f"{self.secret}|{self.round_index}|{self.network}|{kind}|{'.'.join(map(str, ids))}")
        return torch.randint(_LOW, _HIGH, (numel,), generator=torch.Generator().manual_seed(seed), dtype=torch.int64)


def _digest(text: str) -> int:
    """64 bits of SHA-256 of ``text``: a key derived from what names it."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def key_seed(text: str) -> int:
    """A torch generator seed (63 bits) from the key ``text`` names."""
    return _digest(text) & (2**63 - 1)


def client_secret(seed: int) -> int:
    """The simulation's stand-in for the clients' key agreement: a secret derived from the run's seed, read only
    by the client side of the aggregation."""
    return _digest(f"huscf-clients-{seed}")


def encode(values: Tensor) -> Tensor:
    """Fixed point: round(values * 2^FRACTION_BITS) as int64, refusing values too large to carry."""
    values = values.double()
    largest = float(values.abs().max()) if values.numel() else 0.0
    if not largest < LIMIT:
        raise MaskingError(
            f"A weight of magnitude {largest:.3g} cannot be masked: fixed point with {FRACTION_BITS} fraction bits "
            f"carries values below {LIMIT:.3g}. Such a weight means training diverged; lower the learning rate, or "
            "turn model.privacy.masked_aggregation off."
        )
    return torch.round(values * _SCALE).to(torch.int64)


def decode(values: Tensor, dtype: torch.dtype) -> Tensor:
    """Back from fixed point to ``dtype``."""
    return (values.double() / _SCALE).to(dtype)


def ring_groups(groups: Tensor) -> dict[int, list[int]]:
    """Each group's members (columns), in order: the ring their pairwise masks follow."""
    members: dict[int, list[int]] = {}
    for column, group in enumerate(groups.tolist()):
        members.setdefault(int(group), []).append(column)
    return members


def client_masks(session: MaskSession, columns: Sequence[int], groups: Tensor, numel: int, readable: bool) -> Tensor:
    """(len(columns), numel) int64: the mask each of ``columns`` adds to its contribution (computed by the client
    from its own keys: its two ring edges, and its group's key when it leads the group and ``readable`` is False).
    A ring of one has one edge from its member to itself, which it adds and subtracts: its mask is the group's."""
    rings = ring_groups(groups)
    out_edges, in_edges, leaders = [], [], []
    for row, column in enumerate(columns):
        group = int(groups[column])
        ring = rings[group]
        place = ring.index(column)
        out_edges.append((column, ring[(place + 1) % len(ring)]))
        in_edges.append((ring[place - 1], column))
        if not readable and place == 0:
            leaders.append((row, group))
    # each edge's stream drawn once here, though both of its ends use it
    edges = list(dict.fromkeys(out_edges + in_edges))
    index = {edge: i for i, edge in enumerate(edges)}
    streams = torch.stack([session.stream("edge", *edge, numel=numel) for edge in edges])
    masks = streams[[index[e] for e in out_edges]] - streams[[index[e] for e in in_edges]]
    for row, group in leaders:
        masks[row] += session.stream("group", group, *rings[group], numel=numel)
    return masks


def group_masks(session: MaskSession, groups: Tensor, num_groups: int, numel: int) -> Tensor:
    """(num_groups, numel) int64: the group masks, as the members compute them to unmask their group's sum."""
    rings = ring_groups(groups)
    return torch.stack([session.stream("group", g, *rings[g], numel=numel) for g in range(num_groups)])


def server_sums(masked: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """The server's whole part: the masked contributions (R, P) added per group (G, P), modulo 2^64."""
    sums = torch.zeros(num_groups, masked.shape[1], dtype=torch.int64)
    return sums.index_add_(0, groups.to(torch.long), masked)


def check_within_groups(matrix: Tensor, groups: Tensor) -> None:
    """Refuse weights that mix groups: masked sums need each row to weigh only the members of its group."""
    outside = (matrix != 0) & (groups.unsqueeze(0) != torch.arange(matrix.shape[0]).unsqueeze(1))
    if bool(outside.any()):
        raise MaskingError(
            "Masked aggregation averages each group over its own members, but this round's weights give a client "
            "weight in a group it is not in (a strategy that moves copies between clients, as md_gan's swap does). "
            "Turn model.privacy.masked_aggregation off for this method."
        )


def flatten(states: Mapping[object, Tensor], rows: int) -> Tensor:
    """The tensors of ``states`` (each (rows, ...)) as one (rows, P) float64 matrix, in the mapping's order."""
    return torch.cat([t.detach().reshape(rows, -1).double().cpu() for t in states.values()], dim=1)


def unflatten(flat: Tensor, like: Mapping[object, Tensor]) -> dict[object, Tensor]:
    """(G, P) back to the keys of ``like``, each (G, ...) in its own dtype and device."""
    sizes = [t[0].numel() for t in like.values()]
    parts = flat.split(sizes, dim=1)
    return {
        key: part.reshape(flat.shape[0], *t.shape[1:]).to(device=t.device, dtype=t.dtype)
        for (key, t), part in zip(like.items(), parts)
    }


def masked_contributions(
    session: MaskSession, values: Tensor, weights: Tensor, columns: Sequence[int], groups: Tensor, readable: bool
) -> Tensor:
    """What the clients ``columns`` send: their rows of ``values`` (R, P) float64, each times its weight in its
    group (``weights`` (G, K), ``groups`` (K,)), encoded and masked. The server sees only this."""
    index = torch.as_tensor(list(columns), dtype=torch.long)
    own = weights[groups[index], index].to(torch.float64).unsqueeze(1)
    return encode(values * own) + client_masks(session, columns, groups, values.shape[1], readable)


def unmask_sums(session: MaskSession, sums: Tensor, groups: Tensor, readable: bool, dtype: torch.dtype) -> Tensor:
    """The group averages (G, P) from the server's sums, as the members recover them."""
    if not readable:
        sums = sums - group_masks(session, groups, sums.shape[0], sums.shape[1])
    return decode(sums, dtype)
