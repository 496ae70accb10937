"""A block network split U-shape across many clients and one server, with the clients' copies stacked.

Client ``i`` with cut (head h, tail t) runs blocks ``[0, h)`` and ``[n - t, n)`` on its own copies;
blocks ``[h, n - t)`` run on the server. The baselines' whole-network placements are cuts too: (n, 0)
keeps the whole network on the client, (0, 0) runs it wholly on the server, from inputs made there
(MD-GAN's generator draws its own noise and labels) and with outputs that stay there.

Storage. The server keeps ONE shared module per block that any client runs there and runs it once
per step over the concatenation of its clients' activations. The clients' copies of a block are one
stacked module (`split.stacked`): every tensor has a leading client axis, row r for the r-th client
that holds the block. A client's copy is a row of that storage, never a module of its own, so the
optimiser steps one tensor per parameter whatever the number of clients, and aggregation reads and
writes the storage directly (`stacked_states`, `load_client_averages`).

Resident clients. The stacks hold the *resident* clients only (all of them by default). With partial
participation the round's participants are resident; every other client's state waits in the
`ClientStore` (host memory, shared per cluster model) and comes back with `set_resident`.

Computing the clients' copies: one by one on the row views (fastest on a CPU, where calls are not
launch-bound), or once per block under ``torch.func.vmap`` over the rows (a GPU), straight on the
stacked tensors: nothing is restacked on the step path. Every crossing of a cut goes through the
`Wire`, one call per cut and direction for all the clients that cross it together.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from huscf_lightning.collectives import gather_objects, sync_batch_norms
from huscf_lightning.compat import foreach_copy
from huscf_lightning.nets import BlockNetwork, NetworkError
from huscf_lightning.split.client_store import ClientStore, StateKey
from huscf_lightning.split.plan import check_head_tail, is_whole_network_cut
from huscf_lightning.split.stacked import (
    RowCalls,
    call_stacked,
    named_tensors,
    persistent_names,
    stack_block,
    unstacked_row,
    with_tensors,
)
from huscf_lightning.split.wire import DOWN, UP, Wire


@dataclass(frozen=True)
class ServerActivation:
    """One server block's output over the clients that ran it there: the concatenated batch, whose
    client each part is (``members``, resident positions) and the parts' sizes."""

    batch: Tensor
    members: tuple[int, ...]
    sizes: list[int]

    def client_means(self, num_clients: int) -> Tensor:
        """(K, ...) batch mean of each client's part, in client order (every client must be a member)."""
        if sorted(self.members) != list(range(num_clients)):
            raise NetworkError(
                f"The kept activation covers clients {list(self.members)}, not all {num_clients}; keep a block that "
                "every client runs on the server (SplitNetwork.common_server_block)."
            )
        means = torch.stack([part.mean(dim=0) for part in self.batch.split(self.sizes)])
        return means[torch.as_tensor(self.members).argsort()]


@dataclass(frozen=True)
class _PlainBlocks:
    """The template's blocks, outside the module tree: the structure stacks and client copies are made from."""

    blocks: tuple[nn.Module, ...]


class SplitNetwork(nn.Module):
    """Stacked client head/tail copies plus one shared server copy of each server block.

    ``resident``: the clients whose copies the stacks hold (default: all). Lists passed to `forward`
    and returned by it, and the positions in ``local_members`` / ``server_members``, follow
    ``resident`` order; the wire and the store speak of clients by their global index.
    """

    def __init__(
        self,
        template: BlockNetwork,
        head_tails: Sequence[tuple[int, int]],
        name: str,
        wire: Wire,
        batch_clients: bool | None = None,
        resident: Sequence[int] | None = None,
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
        self._plain = _PlainBlocks(tuple(copy.deepcopy(block) for block in template.blocks))
        self.server_blocks = nn.ModuleDict(
            {str(j): copy.deepcopy(template.blocks[j]) for j in range(n) if not all(self.is_local(i, j) for i in range(self.num_clients))}
        )
        self.client_stacks = nn.ModuleDict()
        # what any client holds locally: the state a client keeps between the rounds it takes part in
        held = [j for j in range(n) if any(self.is_local(i, j) for i in range(self.num_clients))]
        # the initial model is the plain blocks' own tensors (the store never writes into a model): no extra copy
        initial = {(j, key): t.detach() for j in held for key, t in self._plain.blocks[j].state_dict().items()}
        self.store = ClientStore(initial, self.num_clients)
        self.resident: tuple[int, ...] = ()
        self._empty_inputs: dict[int, tuple[int, ...]] | None = None
        self.dangling: list[Tensor] = []  # a sharded server's empty-batch outputs of the last forward
        self.dangling_inputs: list[Tensor] = []  # and their inputs: leaves that require a gradient
        self.set_resident(range(self.num_clients) if resident is None else resident)
        self._shared_views: dict[int, RowCalls] | None = None

    # ----------------------------------------------------------------- who holds what
    @property
    def num_clients(self) -> int:
        return len(self.head_tails)

    @property
    def all_resident(self) -> bool:
        return len(self.resident) == self.num_clients

    def is_local(self, client: int, block: int) -> bool:
        """Whether ``client`` (global index) runs ``block`` on its own copy (head or tail) rather than on the server."""
        h, t = self.head_tails[client]
        return block < h or block >= self.num_blocks - t

    def common_server_block(self) -> int | None:
        """The first block that every client runs on the server (clustering features come from it)."""
        first = max(h for h, _ in self.head_tails)
        last = min(self.num_blocks - t for _, t in self.head_tails)
        return first if first < last else None

    def set_resident(self, clients: Sequence[int]) -> None:
        """Hold the copies of ``clients`` (global indices) in the stacks, from the store; the others' stacked
        state is dropped, so write it to the store first (`park`). Rebuilding the stacks makes new parameters:
        an optimiser over the old ones must be rebuilt too."""
        resident = tuple(sorted(int(c) for c in clients))
        if not resident or len(set(resident)) != len(resident) or not 0 <= resident[0] <= resident[-1] < self.num_clients:
            raise NetworkError(f"Resident clients must be distinct indices in 0..{self.num_clients - 1}; got {list(clients)}.")
        device, dtype = self._placement()
        self.resident = resident
        self.local_members: list[tuple[int, ...]] = [
            tuple(p for p, i in enumerate(resident) if self.is_local(i, j)) for j in range(self.num_blocks)
        ]
        self.server_members: list[tuple[int, ...]] = [
            tuple(p for p, i in enumerate(resident) if not self.is_local(i, j)) for j in range(self.num_blocks)
        ]
        self._row = [{p: r for r, p in enumerate(members)} for members in self.local_members]
        stacks = {}
        for j, members in enumerate(self.local_members):
            if not members:
                continue
            plain = self._plain.blocks[j]
            states = [self._client_block_state(resident[p], j, plain) for p in members]
            # on the networks' device and floating dtype (a float64 run's stacks are rebuilt from float32 templates)
            stacks[str(j)] = stack_block(plain, states).to(device=device, dtype=dtype).train(self.training)
        self.client_stacks = nn.ModuleDict(stacks)
        self._gradients: dict[int, dict[str, Tensor]] = {}  # per stack: its parameters' gradient buffers (RowCalls)

    def _client_block_state(self, client: int, block: int, plain: nn.Module) -> dict[str, Tensor]:
        """Every tensor of ``client``'s copy of ``block``: its stored state, plain-block values for the rest."""
        tensors = {name: t.detach() for name, t in named_tensors(plain).items()}
        stored = self.store.client_state(client)
        for name in persistent_names(plain):
            tensors[name] = stored[(block, name)]
        return tensors

    def shard_server(self, input_shapes: Sequence[tuple[int, ...]]) -> None:
        """Make the server blocks one replica of a server sharded over processes (`huscf_lightning.collectives`):
        their batch norms use the statistics of every rank's batch, and every forward calls every server block,
        with an empty batch where no resident client uses it (``input_shapes``: each block's per-sample input
        shape), so all ranks take part in the same sums. The outputs of those calls are left in ``dangling`` after
        each forward: add ``0 * sum`` of them to the loss, so the backward runs their sums too."""
        sync_batch_norms(self.server_blocks)
        self._empty_inputs = {j: tuple(input_shapes[j]) for j in range(self.num_blocks)}

    def holders(self, block: int, clients: Sequence[int]) -> list[int]:
        """Those of ``clients`` (global indices) that hold ``block`` themselves, in order: the rows of its stack when
        ``clients`` are resident in one process."""
        return [i for i in clients if self.is_local(i, block)]

    def parameter_names(self, clients: Sequence[int] | None = None) -> list[str]:
        """The names of the parameters in `parameters()` order (the optimiser's), for the resident clients, or as
        one process holding ``clients`` would have them."""
        names = [f"server_blocks.{j}.{n}" for j, block in self.server_blocks.items() for n, _ in block.named_parameters()]
        if clients is None:
            blocks = [int(j) for j in self.client_stacks]
        else:
            blocks = [j for j in range(self.num_blocks) if self.holders(j, clients)]
        return names + [f"client_stacks.{j}.{n}" for j in blocks for n, _ in self._plain.blocks[j].named_parameters()]

    def _device(self) -> torch.device:
        return self._placement()[0]

    def _placement(self) -> tuple[torch.device, torch.dtype]:
        """The device and floating dtype the networks' parameters are on (the CPU and the default dtype before any)."""
        for tensor in list(self.server_blocks.parameters()) + list(self.client_stacks.parameters()):
            if tensor.is_floating_point():
                return tensor.device, tensor.dtype
        return torch.device("cpu"), torch.get_default_dtype()

    # ----------------------------------------------------------------- per-client state
    def _copy_used(self, client: int, block: int) -> tuple[nn.Module, int | None]:
        """The module resident ``client`` computes ``block`` with, and its row there (None: the server's own copy)."""
        p = self.resident.index(client)
        if p in self._row[block]:
            return self.client_stacks[str(block)], self._row[block][p]
        return self.server_blocks[str(block)], None

    def used_tensors(self, client: int) -> dict[StateKey, Tensor]:
        """(block, name) -> the tensor resident ``client`` computes with: a row view of its stack, or the server's."""
        used: dict[StateKey, Tensor] = {}
        for j in range(self.num_blocks):
            module, row = self._copy_used(client, j)
            used.update({(j, name): t if row is None else t[row] for name, t in module.state_dict(keep_vars=True).items()})
        return used

    def client_state(self, client: int) -> dict[StateKey, Tensor]:
        """(block, name) -> every tensor of the blocks ``client`` (global index) holds itself: row views of the
        stacks when it is resident, else its stored model's tensors (shared with its slot: read, do not write)."""
        if client in self.resident:
            used = self.used_tensors(client)
        else:
            used = self.store.client_state(client)
        return {key: t for key, t in used.items() if self.is_local(client, key[0])}

    def used_gradients(self, client: int) -> dict[StateKey, Tensor | None]:
        """(block, name) -> the gradient of each parameter ``client`` computes with (its row, or the server's)."""
        grads: dict[StateKey, Tensor | None] = {}
        for j in range(self.num_blocks):
            module, row = self._copy_used(client, j)
            for name, param in module.named_parameters():
                grads[(j, name)] = param.grad if row is None or param.grad is None else param.grad[row]
        return grads

    def client_block(self, client: int, block: int) -> nn.Module:
        """A copy of ``client``'s own copy of ``block`` (global index; from its stack row, or from the store when it
        is not resident) as a plain module, in the network's mode. Writing into it changes nothing here."""
        if not self.is_local(client, block):
            raise NetworkError(f"Client {client} runs block {block} of {self.name} on the server; it holds no copy.")
        plain = self._plain.blocks[block]
        if client in self.resident:
            stack, row = self._copy_used(client, block)
            copied = unstacked_row(stack, plain, row)
        else:
            state = self._client_block_state(client, block, plain)
            copied = with_tensors(plain, {name: t.to(self._device()).clone() for name, t in state.items()})
        return copied.train(self.training)

    def fresh_block(self, block: int, seed: int) -> nn.Module:
        """A newly initialised copy of ``block`` (every submodule's ``reset_parameters`` under ``seed``; the global
        RNG is left as it was), on the CPU in the template's dtype."""
        fresh = copy.deepcopy(self._plain.blocks[block])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in fresh.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return fresh

    def client_path(self, client: int) -> BlockNetwork:
        """The unsplit network ``client`` (global index) computes with: copies of its own blocks (`client_block`)
        around the server's shared blocks."""
        blocks = [
            self.client_block(client, j) if self.is_local(client, j) else self.server_blocks[str(j)]
            for j in range(self.num_blocks)
        ]
        return BlockNetwork(blocks).train(self.training)

    @torch.no_grad()
    def client_eval(self, client: int, inputs: Sequence[Tensor], batch_size: int) -> Tensor:
        """``client``'s unsplit network (`client_path`) on ``inputs`` in eval mode, ``batch_size`` rows at a
        time; the network's own mode is restored after (the path is a fresh wrapper of its modules)."""
        path, was_training = self.client_path(client), self.training
        path.eval()
        try:
            return torch.cat([path(*chunk) for chunk in zip(*(x.split(batch_size) for x in inputs))])
        finally:
            self.train(was_training)

    def stacked_states(self) -> dict[StateKey, Tensor]:
        """(block, name) -> (R, ...): the state every resident client uses, in resident order, for aggregation.

        A block every resident holds itself is its stack as it is (no copy); a block every resident runs on
        the server is the server's tensor expanded (no copy); a mixed block gathers rows and the server's.
        """
        states: dict[StateKey, Tensor] = {}
        resident = len(self.resident)
        for j in range(self.num_blocks):
            stack = self.client_stacks[str(j)] if str(j) in self.client_stacks else None
            server = self.server_blocks[str(j)] if str(j) in self.server_blocks else None
            names = persistent_names(stack if stack is not None else server)
            stacked = stack.state_dict(keep_vars=True) if stack is not None else {}
            shared = server.state_dict(keep_vars=True) if server is not None else {}
            if stack is not None and len(self.local_members[j]) == resident:
                states.update({(j, n): stacked[n].detach() for n in names})
            elif stack is None:
                states.update({(j, n): shared[n].detach().unsqueeze(0).expand(resident, *shared[n].shape) for n in names})
            else:  # rows of the stack where the client holds the block, the server's row (appended last) elsewhere
                source = torch.tensor([self._row[j].get(p, len(self.local_members[j])) for p in range(resident)])
                for n in names:
                    both = torch.cat([stacked[n].detach(), shared[n].detach().unsqueeze(0)])
                    states[(j, n)] = both[source.to(both.device)]
        return states

    @torch.no_grad()
    def load_client_averages(self, averages: dict[StateKey, Tensor], groups: Tensor) -> None:
        """Write into every stack row its client's group average: ``averages`` (block, name) -> (G, ...),
        ``groups`` (R,) the group of every resident client. One indexed copy per stacked tensor."""
        dst: list[Tensor] = []
        src: list[Tensor] = []
        for j, members in enumerate(self.local_members):
            if not members:
                continue
            rows_groups = groups[list(members)].to(self._device())
            for name, tensor in self.client_stacks[str(j)].state_dict(keep_vars=True).items():
                dst.append(tensor.data if isinstance(tensor, nn.Parameter) else tensor)
                src.append(averages[(j, name)][rows_groups])
        copy_tensors(dst, src)

    @torch.no_grad()
    def load_server_average(self, averages: dict[StateKey, Tensor]) -> None:
        """Write ``averages`` (block, name) -> (1, ...) into the server's shared blocks."""
        dst: list[Tensor] = []
        src: list[Tensor] = []
        for j, block in self.server_blocks.items():
            for name, tensor in block.state_dict(keep_vars=True).items():
                dst.append(tensor.data if isinstance(tensor, nn.Parameter) else tensor)
                src.append(averages[(int(j), name)][0])
        copy_tensors(dst, src)

    def server_keys(self) -> list[StateKey]:
        """The (block, name) of every tensor of the server's shared blocks."""
        return [(int(j), name) for j, block in self.server_blocks.items() for name in persistent_names(block)]

    def client_state_bytes(self, floating_value_bytes: int | None = None) -> list[int]:
        """Per resident client: bytes of the state of the blocks it holds itself (what it sends, and receives, at
        aggregation), from the stacks' row sizes; ``floating_value_bytes``: what a floating value takes on the
        wire when it is not its dtype's size (masked aggregation sends int64)."""
        per_client = [0] * len(self.resident)

        def size(t: Tensor) -> int:
            each = floating_value_bytes if floating_value_bytes and t.is_floating_point() else t.element_size()
            return t[0].numel() * each

        for j, members in enumerate(self.local_members):
            if not members:
                continue
            row = sum(size(t) for t in self.client_stacks[str(j)].state_dict().values())
            for p in members:
                per_client[p] += row
        return per_client

    @torch.no_grad()
    def park(
        self, groups: Tensor | None, group_averages: dict[StateKey, Tensor] | None, clients: Sequence[int] | None = None
    ) -> None:
        """Write the round's clients' state into the store at a round end: one model per group (``groups``, the
        group of each of ``clients``; ``group_averages`` (block, name) -> (G, ...)), or each client its own when
        the round aggregated nothing. ``clients``: the round's clients, by default the resident ones; in a run
        sharded over processes every rank's (each rank holds a share of them), so that every rank's store learns
        every client's model and any rank can rebuild any client's path (evaluation)."""
        keys = self.store.keys
        clients = list(self.resident) if clients is None else list(clients)
        if groups is None:
            states = self.stacked_states()
            own = {c: {key: states[key][p].cpu().clone() for key in keys} for p, c in enumerate(self.resident)}
            if clients != list(self.resident):
                own = {c: model for shard in gather_objects(own) for c, model in shard.items()}
            self.store.update(clients, torch.arange(len(clients)), [own[c] for c in clients], follow=False)
            return
        if group_averages is None or any(key not in group_averages for key in keys):
            raise NetworkError("park needs the group average of every block a client holds; aggregate over all of them.")
        models = [{key: group_averages[key][g].cpu().clone() for key in keys} for g in range(int(groups.max()) + 1)]
        self.store.update(clients, groups.cpu(), models)

    # ----------------------------------------------------------------- forward
    @contextmanager
    def shared_views(self) -> Iterator[None]:
        """Forwards inside share one set of row views per stack (made at first use), so one backward through
        several passes (D on fakes and on reals) stacks each tensor's client gradients once instead of once a pass
        and summing the stacks. Leave it before the stacks change (an optimiser step, `set_resident`)."""
        self._shared_views = {}
        try:
            yield
        finally:
            self._shared_views = None

    def forward(self, inputs: Sequence[Tensor | None], labels: Sequence[Tensor | None]) -> list[Tensor | None]:
        """Run every active resident client (input not None) through its path; returns per-client outputs.

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
        if len(inputs) != len(self.resident):
            raise NetworkError(
                f"{self.name} holds {len(self.resident)} resident clients but got inputs for {len(inputs)}; pass one "
                "input (or None) per resident client, in resident order."
            )
        active = [x is not None for x in inputs]
        self.dangling = []
        self.dangling_inputs = []
        acts: list[Tensor | None] = list(inputs)
        batch: Tensor | None = None
        members: tuple[int, ...] = ()
        sizes: list[int] = []
        kept = None
        views = self._shared_views if self._shared_views is not None else {}
        for j in range(self.num_blocks):
            now = tuple(p for p in self.server_members[j] if active[p])
            if members and now != members:
                leaving = [p for p in members if p not in now]
                if not now:  # everyone leaves: the server batch is their parts concatenated already
                    for p, part in zip(members, self._cross_joined(batch, sizes, leaving, "tail", DOWN)):
                        acts[p] = part
                else:
                    parts = dict(zip(members, batch.split(sizes)))
                    for p, part in zip(leaving, self._cross([parts[p] for p in leaving], leaving, "tail", DOWN)):
                        acts[p] = part
                    for p in now:
                        if p in parts:
                            acts[p] = parts[p]
            self._run_local(j, [p for p in self.local_members[j] if active[p]], acts, labels, views)
            if not now and self._empty_inputs is not None and str(j) in self.server_blocks:
                self._run_empty(j)
            if now:
                if now != members:
                    # a whole network on the server (head 0) starts from inputs that are there already
                    arriving = [p for p in now if p not in members and j > 0]
                    sizes = [acts[p].shape[0] for p in now]
                    if arriving == list(now) and not members:  # everyone arrives: one concatenation, one crossing
                        joined = torch.cat([acts[p] for p in now]) if len(now) > 1 else acts[now[0]]
                        batch = self._cross_joined(joined, sizes, arriving, "head", UP, split=False)
                    else:
                        for p, part in zip(arriving, self._cross([acts[p] for p in arriving], arriving, "head", UP)):
                            acts[p] = part
                        batch = torch.cat([acts[p] for p in now]) if len(now) > 1 else acts[now[0]]
                block = self.server_blocks[str(j)]
                batch = block(batch, torch.cat([labels[p] for p in now])) if j == 0 else block(batch)
                if j == keep:
                    kept = ServerActivation(batch.detach(), now, list(sizes))
            members = now
        if members:  # a network that ends on the server (tail 0): its outputs stay there
            for p, part in zip(members, batch.split(sizes)):
                acts[p] = part
        return acts, kept

    def _run_empty(self, j: int) -> None:
        """Server block ``j`` on an empty batch: this rank's share of a block no resident client uses."""
        block = self.server_blocks[str(j)]
        device, dtype = self._placement()
        # a leaf that needs a gradient: the block's backward (its batch norms' sums) then runs on this rank whatever
        # a backward restricts itself to (`inputs=`), as it does on a rank whose clients use the block
        empty = torch.zeros(0, *self._empty_inputs[j], dtype=dtype, device=device, requires_grad=True)
        inputs = (empty, torch.zeros(0, dtype=torch.long, device=device)) if j == 0 else (empty,)
        # with its parameters detached: an unused block gets no gradient here, as in one process, so the optimiser
        # skips it when no rank used it (`collectives.sum_gradients`); its buffers update in place
        detached = {name: p.detach() for name, p in block.named_parameters()}
        self.dangling_inputs.append(empty)
        self.dangling.append(torch.func.functional_call(block, detached, inputs))

    def _cross(self, parts: list[Tensor], positions: list[int], end: str, direction: str) -> list[Tensor]:
        """Carry the clients' ``parts`` across this network's ``end`` cut in one wire call; returns them split."""
        if not parts:
            return []
        joined = torch.cat(parts) if len(parts) > 1 else parts[0]
        return self._cross_joined(joined, [part.shape[0] for part in parts], positions, end, direction)

    def _cross_joined(
        self, joined: Tensor, sizes: list[int], positions: list[int], end: str, direction: str, split: bool = True
    ) -> Tensor | list[Tensor]:
        """Carry ``joined`` (the parts of ``positions``, ``sizes`` rows each, concatenated) in one wire call;
        returns it split into the parts, or whole (``split=False``)."""
        clients = [self.resident[p] for p in positions]
        carried = self.wire.send_group(joined, clients, sizes, f"{self.name}.{end}", direction)
        return list(carried.split(sizes)) if split else carried

    def _run_local(
        self,
        j: int,
        positions: list[int],
        acts: list[Tensor | None],
        labels: Sequence[Tensor | None],
        views: dict[int, RowCalls],
    ) -> None:
        """Block ``j`` on the own copies of ``positions``; those with same-shape inputs in one batched call."""
        if not positions:
            return
        stack = self.client_stacks[str(j)]
        batched = self.batch_clients if self.batch_clients is not None else acts[positions[0]].is_cuda
        groups: dict[tuple[int, ...], list[int]] = {}
        for p in positions:
            groups.setdefault(tuple(acts[p].shape), []).append(p)
        for group in groups.values():
            if len(group) == 1 or not batched:
                if j not in views:
                    views[j] = RowCalls(stack, self._gradients.setdefault(j, {}))
                for p in group:
                    acts[p] = views[j](self._row[j][p], (acts[p], labels[p]) if j == 0 else (acts[p],))
                continue
            args = [torch.stack([acts[p] for p in group])]
            if j == 0:
                args.append(torch.stack([labels[p] for p in group]))
            rows = [self._row[j][p] for p in group]
            every_row = rows == list(range(len(self.local_members[j])))
            index = None if every_row else torch.tensor(rows, device=args[0].device)
            outputs = call_stacked(stack, index, args, f"Block {j} of {self.name}")
            for p, out in zip(group, outputs.unbind(0)):
                acts[p] = out


@torch.no_grad()
def copy_tensors(dst: Sequence[Tensor], src: Sequence[Tensor]) -> None:
    """dst[i] <- src[i] for every i, outside autograd, in one fused kernel (`huscf_lightning.compat.foreach_copy`)."""
    foreach_copy(dst, src)
