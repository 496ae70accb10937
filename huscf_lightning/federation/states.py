"""Aggregation on a split network's stacked storage.

`SplitNetwork.stacked_states` gives, for every (block, name), the state each resident client uses
stacked on a client axis (its own row, or the server's tensor). Averaging is one einsum per tensor
(`averaging.average_states`); the group averages go back into the stacks with one indexed fused copy
(`SplitNetwork.load_client_averages`) and the global one into the server's blocks. Under masked aggregation
(`privacy.masking`) the clients' floating tensors are summed by the server as masked fixed-point values instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from huscf_lightning.collectives import max_, sum_
from huscf_lightning.federation.averaging import average_states, partial_average_states
from huscf_lightning.federation.weights import AggregationWeights
from huscf_lightning.privacy import masking
from huscf_lightning.split.client_store import StateKey
from huscf_lightning.split.network import SplitNetwork


@torch.no_grad()
def aggregate_network(
    net: SplitNetwork,
    weights: AggregationWeights,
    columns: Sequence[int] | None = None,
    masks: masking.MaskSession | None = None,
) -> dict[StateKey, Tensor]:
    """Load every resident client's own blocks with its group's average and the server's with the global one.

    ``columns``: the weights' column of each resident client, when the network holds a shard of the clients
    the weights are over (a rank of a sharded run): each rank then averages its own clients' part and the
    parts are summed over ranks. None: the resident clients are the weights' columns, in order.
    ``masks``: aggregate under additive masks: the clients' blocks so that only a group's members can read its
    average, the server's blocks that some client holds so that the server reads the sum and no client's copy.
    Returns the group averages (G, ...) of every block some client holds itself: the models a client keeps
    between rounds (`SplitNetwork.park`).
    """
    used = net.stacked_states()
    held = {key: used[key] for key in net.store.keys}
    shared = {key: used[key] for key in net.server_keys()}
    if masks is not None:
        held_blocks = {block for block, _ in net.store.keys}  # the same on every process
        client_side = {key: t for key, t in shared.items() if key[0] in held_blocks}
        everyone = torch.zeros_like(weights.client_groups)
        group_averages = _masked_average(held, weights.client_matrix, weights.client_groups, columns, masks, False)
        server_average = _masked_average(client_side, weights.server_matrix, everyone, columns, masks, True)
        own = {key: t for key, t in shared.items() if key[0] not in held_blocks}
        server_average |= _plain_average(own, weights.server_matrix, columns)
    else:
        group_averages = _plain_average(held, weights.client_matrix, columns)
        server_average = _plain_average(shared, weights.server_matrix, columns)
    groups = weights.client_groups if columns is None else weights.client_groups[torch.as_tensor(list(columns))]
    net.load_client_averages(group_averages, groups)
    net.load_server_average(server_average)
    return group_averages


def _plain_average(states: dict[StateKey, Tensor], matrix: Tensor, columns: Sequence[int] | None) -> dict[StateKey, Tensor]:
    """`average_states` of ``states``, or each rank's share of it summed over ranks."""
    if not states:
        return {}
    if columns is None:
        return average_states(states, matrix)
    return _over_ranks(partial_average_states(states, matrix, torch.as_tensor(list(columns))))


def _masked_average(
    states: dict[StateKey, Tensor],
    matrix: Tensor,
    groups: Tensor,
    columns: Sequence[int] | None,
    masks: masking.MaskSession,
    readable: bool,
) -> dict[StateKey, Tensor]:
    """The group averages of ``states`` with every floating tensor summed by the server under masks
    (`privacy.masking`); integer counters take their largest count as unmasked."""
    floats = {key: t for key, t in states.items() if t.is_floating_point()}
    counters = _plain_average({key: t for key, t in states.items() if key not in floats}, matrix, columns)
    if not floats:
        return counters
    masking.check_within_groups(matrix, groups.cpu())
    rows = next(iter(floats.values())).shape[0]
    mine = list(range(rows)) if columns is None else [int(c) for c in columns]
    sent = masking.masked_contributions(masks, masking.flatten(floats, rows), matrix.cpu(), mine, groups.cpu(), readable)
    device = next(iter(floats.values())).device
    sums = masking.server_sums(sent, groups.cpu()[torch.as_tensor(mine)], matrix.shape[0]).to(device)
    sum_([sums])  # a sharded run: every rank's clients' masked values, added as the one server would
    sums = sums.cpu()
    averages = masking.unmask_sums(masks, sums, groups.cpu(), readable, torch.float64)
    return masking.unflatten(averages, floats) | counters


def _over_ranks(parts: dict[StateKey, Tensor]) -> dict[StateKey, Tensor]:
    """Every rank's share summed (floating tensors, one collective for all) or maxed (integer counters)."""
    sum_([t for t in parts.values() if t.is_floating_point()])
    return {key: t if t.is_floating_point() else max_(t) for key, t in parts.items()}
