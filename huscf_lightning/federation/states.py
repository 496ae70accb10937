"""Aggregation on a split network's stacked storage.

`SplitNetwork.stacked_states` gives, for every (block, name), the state each resident client uses
stacked on a client axis (its own row, or the server's tensor). Averaging is one einsum per tensor
(`averaging.average_states`); the group averages go back into the stacks with one indexed fused copy
(`SplitNetwork.load_client_averages`) and the global one into the server's blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from huscf_lightning.collectives import max_, sum_
from huscf_lightning.federation.averaging import average_states, partial_average_states
from huscf_lightning.federation.weights import AggregationWeights
from huscf_lightning.split.client_store import StateKey
from huscf_lightning.split.network import SplitNetwork


@torch.no_grad()
def aggregate_network(
    net: SplitNetwork, weights: AggregationWeights, columns: Sequence[int] | None = None
) -> dict[StateKey, Tensor]:
    """Load every resident client's own blocks with its group's average and the server's with the global one.

    ``columns``: the weights' column of each resident client, when the network holds a shard of the clients
    the weights are over (a rank of a sharded run): each rank then averages its own clients' part and the
    parts are summed over ranks. None: the resident clients are the weights' columns, in order.
    Returns the group averages (G, ...) of every block some client holds itself: the models a client keeps
    between rounds (`SplitNetwork.park`).
    """
    used = net.stacked_states()
    held = {key: used[key] for key in net.store.keys}
    shared = {key: used[key] for key in net.server_keys()}
    if columns is None:
        group_averages = average_states(held, weights.client_matrix)
        server_average = average_states(shared, weights.server_matrix)
    else:
        index = torch.as_tensor(list(columns))
        group_averages = _over_ranks(partial_average_states(held, weights.client_matrix, index))
        server_average = _over_ranks(partial_average_states(shared, weights.server_matrix, index))
    groups = weights.client_groups if columns is None else weights.client_groups[torch.as_tensor(list(columns))]
    net.load_client_averages(group_averages, groups)
    net.load_server_average(server_average)
    return group_averages


def _over_ranks(parts: dict[StateKey, Tensor]) -> dict[StateKey, Tensor]:
    """Every rank's share summed (floating tensors, one collective for all) or maxed (integer counters)."""
    sum_([t for t in parts.values() if t.is_floating_point()])
    return {key: t if t.is_floating_point() else max_(t) for key, t in parts.items()}
