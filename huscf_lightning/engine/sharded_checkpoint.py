"""Checkpoints of a run sharded over processes, in the layout of one process.

Each rank holds the stacked copies (and their Adam state) of its share of the round's clients only. A
checkpoint always holds all the round's clients, as one process would (`gather`): the ranks' rows of each
stack are gathered in client order (the shares are contiguous, in rank order), the server blocks are every
rank's identical replica. A run resumed on any number of processes cuts the rows of its own clients back
out (`shard`). So a checkpoint does not record how many processes wrote it, and resuming in one process
needs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from huscf_lightning.collectives import gather_objects
from huscf_lightning.split.network import SplitNetwork

STACKS = "client_stacks."


def gather(checkpoint: dict[str, Any], networks: dict[str, SplitNetwork], clients: Sequence[int]) -> None:
    """Replace the rank's stacks and stacked Adam states in ``checkpoint`` by those of all the round's ``clients``
    (a collective: every rank calls it). ``networks``: state-dict prefix (``"G."``) -> network, in the
    optimisers' order."""
    state = checkpoint["state_dict"]
    for prefix, net in networks.items():
        own = {key: state.pop(key).cpu() for key in [k for k in state if k.startswith(prefix + STACKS)]}
        shards = gather_objects(own)
        for name in _stack_tensor_names(net, clients):
            state[prefix + name] = torch.cat([shard[prefix + name] for shard in shards if prefix + name in shard])
    optimizers = checkpoint.get("optimizer_states", [])
    for index, net in enumerate(networks.values()):
        if index < len(optimizers):
            optimizers[index] = _gathered_optimizer(optimizers[index], net, clients)


def shard(checkpoint: dict[str, Any], networks: dict[str, SplitNetwork], clients: Sequence[int]) -> None:
    """Cut the rows of this rank's resident clients out of every stack and stacked Adam state of a ``checkpoint``
    that holds all the round's ``clients``, in place, before Lightning loads it."""
    state = checkpoint["state_dict"]
    for prefix, net in networks.items():
        for key in [k for k in state if k.startswith(prefix + STACKS)]:
            rows = _rows(net, int(key[len(prefix + STACKS):].split(".", 1)[0]), clients)
            if rows:
                state[key] = state[key][rows]
            else:
                del state[key]
    optimizers = checkpoint.get("optimizer_states", [])
    for index, net in enumerate(networks.values()):
        if index < len(optimizers):
            optimizers[index] = _sharded_optimizer(optimizers[index], net, clients)


def _rows(net: SplitNetwork, block: int, clients: Sequence[int]) -> list[int]:
    """The rows of ``block``'s stack over all the round's ``clients`` that this rank's resident clients hold."""
    holders = net.holders(block, clients)
    return [holders.index(client) for client in net.resident if client in holders]


def _stack_tensor_names(net: SplitNetwork, clients: Sequence[int]) -> list[str]:
    """Every stacked parameter and buffer of one process holding ``clients``, by state-dict name."""
    return [
        f"{STACKS}{j}.{name}" for j in range(net.num_blocks) if net.holders(j, clients) for name in net._plain.blocks[j].state_dict()
    ]


def _gathered_optimizer(local: dict[str, Any], net: SplitNetwork, clients: Sequence[int]) -> dict[str, Any]:
    """An Adam state dict over the parameters of one process holding ``clients``, from every rank's own."""
    names = net.parameter_names()
    own = {names[index]: {k: v.cpu() if torch.is_tensor(v) else v for k, v in per_param.items()}
           for index, per_param in local["state"].items()}
    shards = gather_objects(own)
    state: dict[int, dict[str, Any]] = {}
    everyone = net.parameter_names(clients)
    for index, name in enumerate(everyone):
        parts = [shard[name] for shard in shards if name in shard]
        if not parts:
            continue
        if name.startswith(STACKS):
            state[index] = {k: torch.cat([p[k] for p in parts]) if _stacked(v) else v for k, v in parts[0].items()}
        else:
            state[index] = parts[0]  # the server's replicas are the same on every rank
    return {"state": state, "param_groups": [{**local["param_groups"][0], "params": list(range(len(everyone)))}]}


def _sharded_optimizer(full: dict[str, Any], net: SplitNetwork, clients: Sequence[int]) -> dict[str, Any]:
    """This rank's Adam state dict, cut from that of one process holding ``clients``."""
    everyone = {name: index for index, name in enumerate(net.parameter_names(clients))}
    names = net.parameter_names()
    state: dict[int, dict[str, Any]] = {}
    for index, name in enumerate(names):
        per_param = full["state"].get(everyone[name])
        if per_param is None:
            continue
        if name.startswith(STACKS):
            rows = _rows(net, int(name[len(STACKS):].split(".", 1)[0]), clients)
            per_param = {k: v[rows] if _stacked(v) else v for k, v in per_param.items()}
        state[index] = per_param
    return {"state": state, "param_groups": [{**full["param_groups"][0], "params": list(range(len(names)))}]}


def _stacked(value: Any) -> bool:
    """An optimiser state entry with a client axis (moments), not a scalar (the step count)."""
    return isinstance(value, Tensor) and value.dim() > 0
