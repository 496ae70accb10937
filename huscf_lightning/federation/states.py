"""Aggregation on a split network's stacked storage.

`SplitNetwork.stacked_states` gives, for every (block, name), the state each resident client uses
stacked on a client axis (its own row, or the server's tensor). Averaging is one einsum per tensor
(`averaging.average_states`); the group averages go back into the stacks with one indexed fused copy
(`SplitNetwork.load_client_averages`) and the global one into the server's blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from huscf_lightning.federation.averaging import average_states
from huscf_lightning.federation.weights import AggregationWeights
from huscf_lightning.split.client_store import StateKey
from huscf_lightning.split.network import SplitNetwork


@torch.no_grad()
def aggregate_network(net: SplitNetwork, weights: AggregationWeights) -> dict[StateKey, Tensor]:
    """Load every resident client's own blocks with its group's average and the server's with the global one.

    Returns the group averages (G, ...) of every block some client holds itself: the models a client keeps
    between rounds (`SplitNetwork.park`).
    """
    used = net.stacked_states()
    group_averages = average_states({key: used[key] for key in net.store.keys}, weights.client_matrix)
    net.load_client_averages(group_averages, weights.client_groups)
    net.load_server_average(average_states({key: used[key] for key in net.server_keys()}, weights.server_matrix))
    return group_averages
