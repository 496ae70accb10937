"""The per-module split network the stacked storage replaced, kept as the reference it must equal.

Every client's head and tail blocks are separate module copies (a ModuleList of ModuleDicts), run one
by one or stacked per step under vmap, and every crossing goes over the wire once per client. Only the
tests use it (`test_stacked_storage.py`): the package's `SplitNetwork` must give the same forward,
gradients, batch-norm statistics, optimiser states and wire bytes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from huscf_lightning.nets import BlockNetwork, NetworkError
from huscf_lightning.split.network import ServerActivation, copy_tensors
from huscf_lightning.split.plan import check_head_tail, is_whole_network_cut
from huscf_lightning.split.wire import DOWN, UP, Wire


class PerClientSplitNetwork(nn.Module):
    """Per-client head/tail copies plus one shared server copy of each server block."""

    def __init__(
        self,
        template: BlockNetwork,
        head_tails: Sequence[tuple[int, int]],
        name: str,
        wire: Wire,
        batch_clients: bool | None = None,
    ) -> None:
        super().__init__()
        n = template.num_blocks
        for i, (h, t) in enumerate(head_tails):
            if not is_whole_network_cut(h, t, n):
                check_head_tail(h, t, n, f"client {i}, network {name}")
        self.name = name
        self.num_blocks = n
        self.head_tails = [tuple(ht) for ht in head_tails]
        self.wire = wire
        self.batch_clients = batch_clients
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
        return self._forward(inputs, labels, None)[0]

    def forward_keeping(
        self, inputs: Sequence[Tensor | None], labels: Sequence[Tensor | None], block: int
    ) -> tuple[list[Tensor | None], ServerActivation | None]:
        """`forward`, also returning the server's output of ``block`` (detached; None if the server does not run it)."""
        return self._forward(inputs, labels, block)

    def _forward(
        self, inputs: Sequence[Tensor | None], labels: Sequence[Tensor | None], keep: int | None
    ) -> tuple[list[Tensor | None], ServerActivation | None]:
        active = [x is not None for x in inputs]
        acts: list[Tensor | None] = list(inputs)
        batch: Tensor | None = None
        members: tuple[int, ...] = ()
        sizes: list[int] = []
        kept = None
        for j in range(self.num_blocks):
            now = tuple(i for i in self.server_members[j] if active[i])
            if members and now != members:
                for i, part in zip(members, batch.split(sizes)):
                    acts[i] = part if i in now else self.wire.send(part, i, f"{self.name}.tail", DOWN)
            self._run_local(j, [i for i in self.local_members[j] if active[i]], acts, labels)
            if now:
                if now != members:
                    # a whole network on the server (head 0) starts from inputs that are there already
                    parts = [acts[i] if i in members or j == 0 else self.wire.send(acts[i], i, f"{self.name}.head", UP) for i in now]
                    sizes = [p.shape[0] for p in parts]
                    batch = torch.cat(parts) if len(parts) > 1 else parts[0]
                block = self.server_blocks[str(j)]
                batch = block(batch, torch.cat([labels[i] for i in now])) if j == 0 else block(batch)
                if j == keep:
                    kept = ServerActivation(batch.detach(), now, list(sizes))
            members = now
        if members:  # a network that ends on the server (tail 0): its outputs stay there
            for i, part in zip(members, batch.split(sizes)):
                acts[i] = part
        return acts, kept

    def _run_local(self, j: int, clients: list[int], acts: list[Tensor | None], labels: Sequence[Tensor | None]) -> None:
        """Block ``j`` on the own copies of ``clients``; those with same-shape inputs in one batched call."""
        if not clients:
            return
        batched = self.batch_clients if self.batch_clients is not None else acts[clients[0]].is_cuda
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in clients:
            groups.setdefault(tuple(acts[i].shape), []).append(i)
        for members in groups.values():
            if len(members) == 1 or not batched:
                for i in members:
                    block = self.client_blocks[i][str(j)]
                    acts[i] = block(acts[i], labels[i]) if j == 0 else block(acts[i])
                continue
            args = [torch.stack([acts[i] for i in members])]
            if j == 0:
                args.append(torch.stack([labels[i] for i in members]))
            outputs = self._stacked_call(j, members, args)
            for i, out in zip(members, outputs.unbind(0)):
                acts[i] = out

    def _stacked_call(self, j: int, members: list[int], args: list[Tensor]) -> Tensor:
        """Run block ``j`` once for ``members``, each on its own copy, over inputs stacked on a client axis.

        The parameters are stacked differentiably (each client's gradient lands in its own copy);
        batch-norm running statistics are updated on the stacked buffers and copied back.
        """
        blocks = [self.client_blocks[i][str(j)] for i in members]
        template = blocks[0]
        params = {n: torch.stack([b.get_parameter(n) for b in blocks]) for n, _ in template.named_parameters()}
        buffers = {n: torch.stack([b.get_buffer(n) for b in blocks]) for n, _ in template.named_buffers()}

        def run_one(p: dict[str, Tensor], b: dict[str, Tensor], *inputs: Tensor) -> Tensor:
            return functional_call(template, (p, b), inputs)

        try:
            outputs = vmap(run_one, randomness="different")(params, buffers, *args)  # dropout: each client its own mask
        except RuntimeError as err:
            if not _runs_unbatched(template, [a[0] for a in args]):
                raise  # the block fails without vmap too: not a batching problem, the original error says what
            raise NetworkError(
                f"Block {j} of {self.name} runs for one client but not batched over clients with torch.func.vmap: "
                f"{err}. Make the block vmap-compatible (no .item() or data-dependent Python branches, no in-place "
                "writes to tensors it does not own), or run clients one by one with --model.batch_clients=false."
            ) from err
        if template.training:
            for n, stacked in buffers.items():
                copy_tensors([b.get_buffer(n) for b in blocks], list(stacked.unbind(0)))
        return outputs


def _runs_unbatched(block: nn.Module, inputs: list[Tensor]) -> bool:
    """Whether ``block`` runs on one client's inputs without vmap (on a copy: its buffers stay as they are)."""
    try:
        with torch.no_grad():
            copy.deepcopy(block)(*inputs)
    except RuntimeError:
        return False
    return True
