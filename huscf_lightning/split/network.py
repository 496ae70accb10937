"""A block network split U-shape across many clients and one server.

Client ``i`` with cut (head h, tail t) runs blocks ``[0, h)`` and ``[n - t, n)`` on its own copies;
blocks ``[h, n - t)`` run on the server. The server keeps ONE shared copy of every block that any
client runs there and runs it once per step over the concatenation of the activations of all
clients that need it. Every crossing of a cut goes through the `Wire`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from huscf_lightning.exchange import DOWN, UP, Wire
from huscf_lightning.nets import BlockNetwork
from huscf_lightning.split.plan import check_head_tail


class SplitNetwork(nn.Module):
    """Per-client head/tail copies plus one shared server copy of each server block."""

    def __init__(self, template: BlockNetwork, head_tails: Sequence[tuple[int, int]], name: str, wire: Wire) -> None:
        super().__init__()
        n = template.num_blocks
        for i, (h, t) in enumerate(head_tails):
            check_head_tail(h, t, n, f"client {i}, network {name}")
        self.name = name
        self.num_blocks = n
        self.head_tails = [tuple(ht) for ht in head_tails]
        self.wire = wire
        self.client_blocks = nn.ModuleList(
            nn.ModuleDict({str(j): copy.deepcopy(template.blocks[j]) for j in range(n) if self.is_local(i, j)})
            for i in range(self.num_clients)
        )
        self.server_members: list[tuple[int, ...]] = [
            tuple(i for i in range(self.num_clients) if not self.is_local(i, j)) for j in range(n)
        ]
        self.server_blocks = nn.ModuleDict(
            {str(j): copy.deepcopy(template.blocks[j]) for j in range(n) if self.server_members[j]}
        )
        self.local_members: list[tuple[int, ...]] = [
            tuple(i for i in range(self.num_clients) if self.is_local(i, j)) for j in range(n)
        ]
        self.tap_block: int | None = None
        self.tapped: tuple[Tensor, tuple[int, ...], list[int]] | None = None

    @property
    def num_clients(self) -> int:
        return len(self.head_tails)

    def is_local(self, client: int, block: int) -> bool:
        """Whether ``client`` runs ``block`` on its own copy (head or tail) rather than on the server."""
        h, t = self.head_tails[client]
        return block < h or block >= self.num_blocks - t

    def block_used_by(self, client: int, block: int) -> nn.Module:
        """The copy of ``block`` that ``client`` computes with: its own, or the server's shared one."""
        if self.is_local(client, block):
            return self.client_blocks[client][str(block)]
        return self.server_blocks[str(block)]

    def common_server_block(self) -> int | None:
        """The first block that every client runs on the server (clustering features come from it)."""
        first = max(h for h, _ in self.head_tails)
        last = min(self.num_blocks - t for _, t in self.head_tails)
        return first if first < last else None

    def client_path(self, client: int) -> BlockNetwork:
        """The unsplit network that ``client`` effectively runs (shares modules; no wire, no copy)."""
        return BlockNetwork([self.block_used_by(client, j) for j in range(self.num_blocks)])

    def forward(self, inputs: Sequence[Tensor | None], labels: Sequence[Tensor | None]) -> list[Tensor | None]:
        """Run every active client (input not None) through its path; returns per-client outputs.

        The server part of the batch stays concatenated while its membership does not change,
        so a run of shared blocks costs one call each over the whole server batch.
        """
        active = [x is not None for x in inputs]
        acts: list[Tensor | None] = list(inputs)
        batch: Tensor | None = None
        members: tuple[int, ...] = ()
        sizes: list[int] = []
        self.tapped = None
        for j in range(self.num_blocks):
            now = tuple(i for i in self.server_members[j] if active[i])
            if members and now != members:
                for i, part in zip(members, batch.split(sizes)):
                    acts[i] = part if i in now else self.wire.send(part, i, f"{self.name}.tail", DOWN)
            for i in self.local_members[j]:
                if active[i]:
                    block = self.client_blocks[i][str(j)]
                    acts[i] = block(acts[i], labels[i]) if j == 0 else block(acts[i])
            if now:
                if now != members:
                    parts = [acts[i] if i in members else self.wire.send(acts[i], i, f"{self.name}.head", UP) for i in now]
                    sizes = [p.shape[0] for p in parts]
                    batch = torch.cat(parts) if len(parts) > 1 else parts[0]
                batch = self.server_blocks[str(j)](batch)
                if j == self.tap_block:
                    self.tapped = (batch.detach(), now, list(sizes))
            members = now
        return acts
