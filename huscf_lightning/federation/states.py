"""The stacked view of a split network's block states that aggregation works on.

A tensor is identified by (block index, name inside the block), so it lines up whether the
block lives on a client or on the server. For every such key the state each client *uses*
(its own copy if the block is local to it, else the server's) is stacked on a leading client
axis; averaging is then one einsum per tensor (`averaging.average_states`), and the results go
back with one fused copy per network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from huscf_lightning.federation.averaging import average_states
from huscf_lightning.federation.weights import AggregationWeights
from huscf_lightning.split.network import SplitNetwork, copy_tensors


def _tensors(module: nn.Module) -> dict[str, Tensor]:
    """Parameters and persistent buffers by state-dict name, as live tensors (not copies)."""
    names = module.state_dict(keep_vars=True).keys()
    live = dict(module.named_parameters()) | dict(module.named_buffers())
    return {name: live[name] for name in names}


def stacked_states(net: SplitNetwork) -> dict[str, Tensor]:
    """``"block.name" -> (K, ...)``: parameters and buffers of the copy every client uses."""
    keys = [(j, name) for j in range(net.num_blocks) for name in _tensors(net.block_used_by(0, j))]
    used = [[_tensors(net.block_used_by(i, j)) for j in range(net.num_blocks)] for i in range(net.num_clients)]
    return {
        f"{j}.{name}": torch.stack([used[i][j][name].detach() for i in range(net.num_clients)]) for j, name in keys
    }


@torch.no_grad()
def aggregate_network(net: SplitNetwork, weights: AggregationWeights) -> None:
    """Load every client's local blocks with its group's average and the server's with the global one."""
    stacked = stacked_states(net)
    groups = weights.client_groups.tolist()
    local_tensors = [{str(j): _tensors(m) for j, m in blocks.items()} for blocks in net.client_blocks]
    server_tensors = {j: _tensors(m) for j, m in net.server_blocks.items()}
    owners = {
        key: [i for i in range(net.num_clients) if key.split(".", 1)[0] in local_tensors[i]] for key in stacked
    }
    # One call per matrix: the weights are checked once, then one einsum per tensor.
    client_avgs = average_states({k: v for k, v in stacked.items() if owners[k]}, weights.client_matrix.to(net_device(net)))
    server_avgs = average_states(
        {k: v for k, v in stacked.items() if k.split(".", 1)[0] in server_tensors}, weights.server_matrix.to(net_device(net))
    )
    dst: list[Tensor] = []
    src: list[Tensor] = []
    for key, averaged in client_avgs.items():
        block, name = key.split(".", 1)
        dst.extend(local_tensors[i][block][name] for i in owners[key])
        src.extend(averaged[groups[i]] for i in owners[key])
    for key, averaged in server_avgs.items():
        block, name = key.split(".", 1)
        dst.append(server_tensors[block][name])
        src.append(averaged[0])
    copy_tensors(dst, src)


def client_state_bytes(net: SplitNetwork) -> list[int]:
    """Per client: bytes of the state of the blocks it holds itself (what it sends, and receives, at aggregation)."""
    return [
        sum(t.numel() * t.element_size() for t in blocks.state_dict().values()) for blocks in net.client_blocks
    ]


def net_device(net: nn.Module) -> torch.device:
    """The device the network's parameters live on."""
    return next(net.parameters()).device
