"""The wire: the only place a tensor crosses between a client and the server.

In forward the wire carries a cut-layer activation, in backward the gradient of that activation
coming the other way. For autograd it is the identity; its job is to enforce the privacy contract
(only floating-point activations and their gradients cross: labels are integers and are refused)
and to count bytes per client, per cut and per direction. Clients that cross the same cut at the same
point of a step cross together: one call for the group, whose tensor is their parts concatenated on
the batch axis, with each client's bytes counted from its part's size. A compressing codec or a real
network transport replaces `Wire.transport` without touching the training step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from huscf_lightning.collectives import gather_objects, world_size
from huscf_lightning.errors import HuSCFError

UP = "up"  # client -> server
DOWN = "down"  # server -> client


class WireError(HuSCFError, TypeError):
    """Something that must never cross a cut was sent over the wire."""


@dataclass(frozen=True)
class Crossing:
    """Where a tensor crosses: the clients whose parts it carries (rows ``sizes[i]`` each, in order along the
    batch axis), the cut's name (e.g. ``"G.head"``) and the direction."""

    clients: tuple[int, ...]
    sizes: tuple[int, ...]
    cut: str
    direction: str

    def reversed(self) -> Crossing:
        """The same crossing the other way (the gradient's)."""
        return Crossing(self.clients, self.sizes, self.cut, DOWN if self.direction == UP else UP)


class _WireFunction(torch.autograd.Function):
    """Identity whose forward and backward each pass through the wire's accounting."""

    @staticmethod
    def forward(ctx, tensor: Tensor, wire: Wire, crossing: Crossing) -> Tensor:  # type: ignore[override]
        ctx.wire = wire
        ctx.crossing = crossing
        return wire.transport(tensor, crossing, gradient=False)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return ctx.wire.transport(grad, ctx.crossing.reversed(), gradient=True), None, None


class Wire:
    """In-process wire with byte accounting; subclass and override `transport` for a real link."""

    def __init__(self) -> None:
        self.bytes: dict[tuple[int, str, str, str], int] = defaultdict(int)
        self.dtypes_carried: set[torch.dtype] = set()
        # called with (tensor, clients, sizes, cut, direction) for every activation sent: what watches the traffic
        # (a privacy penalty on what the clients send) without changing it
        self.taps: list[Callable[[Tensor, tuple[int, ...], tuple[int, ...], str, str], None]] = []

    def send(self, tensor: Tensor, client: int, cut: str, direction: str) -> Tensor:
        """Carry an activation across ``cut`` for ``client``; its gradient comes back the same way."""
        rows = tensor.shape[0] if isinstance(tensor, Tensor) and tensor.dim() else 1
        return self.send_group(tensor, [client], [rows], cut, direction)

    def send_group(self, tensor: Tensor, clients: Sequence[int], sizes: Sequence[int], cut: str, direction: str) -> Tensor:
        """Carry the activations of ``clients`` across ``cut`` in one crossing: ``tensor`` is their parts
        concatenated on the batch axis, ``sizes[i]`` rows for ``clients[i]``. The gradient comes back the same way."""
        if direction not in (UP, DOWN):
            raise WireError(f"direction must be {UP!r} or {DOWN!r}, got {direction!r}")
        if len(clients) != len(sizes) or not clients:
            raise WireError(f"send_group needs one size per client; got clients {list(clients)} and sizes {list(sizes)}.")
        crossing = Crossing(tuple(clients), tuple(int(n) for n in sizes), cut, direction)
        for tap in self.taps:
            tap(tensor, crossing.clients, crossing.sizes, cut, direction)
        return _WireFunction.apply(tensor, self, crossing)

    def account(self, client: int, cut: str, direction: str, nbytes: int, kind: str) -> None:
        """Count bytes that cross without a training tensor to carry: model weights at a round end, the data a
        centralized baseline uploads, the labels MD-GAN's server draws for its generated batches."""
        if direction not in (UP, DOWN):
            raise WireError(f"direction must be {UP!r} or {DOWN!r}, got {direction!r}")
        self.bytes[(client, cut, direction, kind)] += int(nbytes)

    def transport(self, tensor: Tensor, crossing: Crossing, gradient: bool) -> Tensor:
        """Move one tensor (the parts of ``crossing.clients``); the in-process wire only counts it, each client
        its part's bytes. Override for compression/transport."""
        self._check(tensor, crossing.clients, crossing.cut)
        kind = "gradient" if gradient else "activation"
        total, rows = tensor.numel() * tensor.element_size(), sum(crossing.sizes)
        for client, size in zip(crossing.clients, crossing.sizes):
            self.bytes[(client, crossing.cut, crossing.direction, kind)] += total * size // rows if rows else 0
        self.dtypes_carried.add(tensor.dtype)
        return tensor.view_as(tensor)

    @staticmethod
    def _check(tensor: Tensor, clients: Sequence[int], cut: str) -> None:
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            what = tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__
            who = f"client {clients[0]}" if len(clients) == 1 else f"clients {list(clients)}"
            raise WireError(
                f"Refused to send a {what} tensor across cut {cut!r} for {who}: only floating-point "
                f"cut-layer activations and their gradients may leave a client. Labels, indices and raw "
                f"data stay local; keep them in the first/last block of the network."
            )

    def reset(self) -> None:
        """Forget the byte counts (the exchange callback calls this at every round end).

        ``dtypes_carried`` is kept: it is the run's record of what ever crossed a cut.
        """
        self.bytes.clear()

    def sum_over_ranks(self) -> None:
        """Make the counts the sum of every rank's (a sharded run: each rank counted its own clients), on every
        rank; the dtypes carried become their union. A no-op in one process."""
        if world_size() > 1:
            self.load_state_dict(Wire.summed_state(gather_objects(self.state_dict())))

    def state_dict(self) -> dict:
        """The counts since the last reset and the dtypes ever carried (checkpoints save them)."""
        return {"bytes": [[*key, n] for key, n in self.bytes.items()], "dtypes": sorted(str(d) for d in self.dtypes_carried)}

    @staticmethod
    def summed_state(states: list[dict]) -> dict:
        """One `state_dict` whose counts are the sum of ``states``' (the ranks' of a sharded run)."""
        summed = Wire()
        for state in states:
            for client, cut, direction, kind, n in state["bytes"]:
                summed.bytes[(int(client), cut, direction, kind)] += int(n)
            summed.dtypes_carried |= {getattr(torch, name.removeprefix("torch.")) for name in state["dtypes"]}
        return summed.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict` output: a run resumed inside a round keeps counting that round."""
        self.bytes.clear()
        for client, cut, direction, kind, n in state["bytes"]:
            self.bytes[(int(client), cut, direction, kind)] = int(n)
        self.dtypes_carried = {getattr(torch, name.removeprefix("torch.")) for name in state["dtypes"]}

    def total(self, direction: str | None = None, cut: str | None = None, client: int | None = None) -> int:
        """Bytes carried, optionally restricted to one direction, cut and/or client."""
        return sum(
            n
            for (c, k, d, _), n in self.bytes.items()
            if (direction is None or d == direction) and (cut is None or k == cut) and (client is None or c == client)
        )

    def per_client(self, num_clients: int) -> list[dict[str, int]]:
        """Per client: bytes up and down."""
        rows = [{"client": i, UP: 0, DOWN: 0} for i in range(num_clients)]
        for (c, _, d, _), n in self.bytes.items():
            rows[c][d] += n
        return rows
