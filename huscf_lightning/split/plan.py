"""Cuts and split plans: where each client's networks are cut into head, server part and tail."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from huscf_lightning.errors import ConfigError, HuSCFError


class PlanError(HuSCFError, ValueError):
    """A cut or plan that cannot be run; the message names the fix."""


# Where a method puts the blocks of G and D. "split": every client's own cuts (HuSCF-GAN and its
# ablations); the others put whole networks on one side, as the baselines do: "client" (FedGAN,
# local training: G and D wholly on every client), "md_gan" (G wholly on the server, D on every
# client), "central" (everything on the server, over all clients' data).
PLACEMENTS = ("split", "client", "md_gan", "central")
_ON_CLIENT, _ON_SERVER = "client", "server"
_WHOLE = {"client": (_ON_CLIENT, _ON_CLIENT), "md_gan": (_ON_SERVER, _ON_CLIENT), "central": (_ON_SERVER, _ON_SERVER)}


def whole_network_cut(side: str, num_blocks: int) -> tuple[int, int]:
    """(head, tail) that puts a whole network on the client, (n, 0), or on the server, (0, 0)."""
    return (num_blocks, 0) if side == _ON_CLIENT else (0, 0)


def is_whole_network_cut(head: int, tail: int, num_blocks: int) -> bool:
    """Whether (head, tail) puts the whole network on one side (a baseline's placement, not a split)."""
    return (head, tail) in ((num_blocks, 0), (0, 0))


PLAN_SOURCES = ("uniform", "explicit", "random", "ga", "exact")


@dataclass
class PlanSpec:
    """Where the split plan comes from.

    - ``uniform``: every client gets ``cut`` ([g_head, g_tail, d_head, d_tail]).
    - ``explicit``: ``cuts`` lists one cut per client.
    - ``random``: a random valid cut per client, from the run's seed.
    - ``ga``: the genetic algorithm over device ``profiles`` (a YAML path or ``paper``), with the
      clients' device names in ``assignment`` (default: even, seeded), and GA settings in ``ga``.
    - ``exact``: the provably optimal cuts for the same latency model, ``profiles`` and
      ``assignment`` (enumeration of device-type counts, or a MILP); ``ga`` settings are not used.
    """

    source: Literal["uniform", "explicit", "random", "ga", "exact"] = "random"
    cut: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    cuts: list[list[int]] | None = None
    profiles: str = "paper"
    assignment: list[str] | None = None
    ga: dict | None = None

    def validate(self) -> None:
        """Raise a `ConfigError` naming the fix (LightningCLI already checks the Literal types)."""
        if self.source not in PLAN_SOURCES:
            raise ConfigError(
                f"Unknown plan source {self.source!r}. Use one of {', '.join(PLAN_SOURCES)} "
                f"(e.g. --model.plan.source=ga)."
            )


@dataclass(frozen=True)
class Cut:
    """One client's four cut points: blocks kept on the client at the start and end of G and D.

    For a network of ``n`` blocks a valid (head, tail) has head >= 1, tail >= 1 and
    head + tail <= n - 1, so the first block (labels) and the last (output, loss) stay on the
    client and the server runs at least one block.
    """

    g_head: int
    g_tail: int
    d_head: int
    d_tail: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.g_head, self.g_tail, self.d_head, self.d_tail)

    def network(self, net: str) -> tuple[int, int]:
        """(head, tail) of network ``"G"`` or ``"D"``."""
        if net == "G":
            return self.g_head, self.g_tail
        if net == "D":
            return self.d_head, self.d_tail
        raise PlanError(f"Unknown network {net!r}; use 'G' or 'D'.")


def valid_head_tails(num_blocks: int) -> list[tuple[int, int]]:
    """Every valid (head, tail) of an ``num_blocks``-block network, in a fixed order."""
    return [(h, t) for h in range(1, num_blocks - 1) for t in range(1, num_blocks - h)]


def shared_block_head_tails(num_blocks: int) -> list[tuple[int, int]]:
    """The valid (head, tail) pairs that all leave block ``num_blocks // 2`` on the server.

    Any mix of these cuts keeps one block that every client runs on the server, which is where
    clustering reads its features. For the 5-block reference networks this is exactly the
    reference's choice space: head and tail each 1 or 2.
    """
    middle = num_blocks // 2
    return [(h, t) for h, t in valid_head_tails(num_blocks) if h <= middle < num_blocks - t]


def check_head_tail(head: int, tail: int, num_blocks: int, where: str) -> None:
    """Raise a `PlanError` naming the rule when (head, tail) is not a valid cut of the network."""
    if num_blocks < 3:
        raise PlanError(
            f"{where}: a network of {num_blocks} blocks cannot be split into client head, server "
            f"part and client tail; it needs at least 3 blocks."
        )
    if head < 1 or tail < 1 or head + tail > num_blocks - 1:
        raise PlanError(
            f"{where}: cut (head={head}, tail={tail}) is impossible for a {num_blocks}-block network. "
            f"A cut needs head >= 1, tail >= 1 and head + tail <= {num_blocks - 1} (the server runs "
            f"at least one block). Valid (head, tail) pairs: {valid_head_tails(num_blocks)}."
        )


@dataclass(frozen=True)
class SplitPlan:
    """The cuts of all clients plus the block counts; validates itself and round-trips JSON."""

    cuts: tuple[Cut, ...]
    g_blocks: int
    d_blocks: int
    placement: str = "split"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cuts", tuple(self.cuts))
        if not self.cuts:
            raise PlanError("A split plan needs at least one client.")
        if self.placement not in PLACEMENTS:
            raise PlanError(f"Unknown placement {self.placement!r}; a plan's placement is one of {', '.join(PLACEMENTS)}.")
        if self.placement != "split":
            expected = Cut(*whole_network_cut(_WHOLE[self.placement][0], self.g_blocks),
                           *whole_network_cut(_WHOLE[self.placement][1], self.d_blocks))
            if any(cut != expected for cut in self.cuts):
                raise PlanError(f"A {self.placement!r} plan gives every client the cut {expected.as_tuple()}.")
            return
        for i, cut in enumerate(self.cuts):
            check_head_tail(cut.g_head, cut.g_tail, self.g_blocks, f"client {i}, generator")
            check_head_tail(cut.d_head, cut.d_tail, self.d_blocks, f"client {i}, discriminator")

    @property
    def num_clients(self) -> int:
        return len(self.cuts)

    def __iter__(self) -> Iterator[Cut]:
        return iter(self.cuts)

    def head_tails(self, net: str) -> list[tuple[int, int]]:
        """Per-client (head, tail) of network ``"G"`` or ``"D"``."""
        return [cut.network(net) for cut in self.cuts]

    def to_dict(self) -> dict:
        """Plain data for JSON and checkpoints (`from_dict` reads it back)."""
        data = {"g_blocks": self.g_blocks, "d_blocks": self.d_blocks, "cuts": [asdict(c) for c in self.cuts]}
        if self.placement != "split":
            data["placement"] = self.placement
        return data

    def to_json(self) -> str:
        """The plan as JSON text (`from_json` reads it back)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> SplitPlan:
        """A validated plan from `to_dict` output; anything else is a `PlanError` naming the format."""
        try:
            cuts = tuple(Cut(**c) for c in data["cuts"])
            placement = str(data.get("placement", "split"))
            return cls(cuts=cuts, g_blocks=int(data["g_blocks"]), d_blocks=int(data["d_blocks"]), placement=placement)
        except (KeyError, TypeError) as err:
            raise PlanError(
                f"Not a split plan ({err}). A plan is JSON with keys 'g_blocks', 'd_blocks' and "
                f"'cuts' (a list of objects with g_head, g_tail, d_head, d_tail)."
            ) from err

    @classmethod
    def from_json(cls, text: str) -> SplitPlan:
        """The plan of a ``plan.json`` (what every run logs to MLflow)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PlanError(f"Not a split plan: the text is not JSON ({err}).") from err
        if not isinstance(data, dict):
            raise PlanError(f"Not a split plan: the JSON is a {type(data).__name__}, not an object with 'cuts'.")
        return cls.from_dict(data)

    @classmethod
    def whole_networks(cls, placement: str, num_clients: int, g_blocks: int, d_blocks: int) -> SplitPlan:
        """The plan of a baseline placement ("client", "md_gan" or "central"): whole networks on one side."""
        if placement not in _WHOLE:
            raise PlanError(f"Unknown whole-network placement {placement!r}; use one of {', '.join(_WHOLE)}.")
        g_side, d_side = _WHOLE[placement]
        cut = Cut(*whole_network_cut(g_side, g_blocks), *whole_network_cut(d_side, d_blocks))
        return cls(tuple(cut for _ in range(num_clients)), g_blocks, d_blocks, placement)

    @classmethod
    def uniform(cls, cut: Sequence[int], num_clients: int, g_blocks: int, d_blocks: int) -> SplitPlan:
        """Every client gets the same cut."""
        return cls(tuple(Cut(*_four(cut)) for _ in range(num_clients)), g_blocks, d_blocks)

    @classmethod
    def explicit(cls, cuts: Sequence[Sequence[int]], num_clients: int, g_blocks: int, d_blocks: int) -> SplitPlan:
        """One cut per client, given in order."""
        if len(cuts) != num_clients:
            raise PlanError(
                f"The explicit plan lists {len(cuts)} cuts but there are {num_clients} clients; "
                f"give exactly one [g_head, g_tail, d_head, d_tail] per client."
            )
        return cls(tuple(Cut(*_four(c)) for c in cuts), g_blocks, d_blocks)

    @classmethod
    def random(cls, num_clients: int, g_blocks: int, d_blocks: int, seed: int, shared_block: bool = True) -> SplitPlan:
        """A seeded random valid cut per client (heterogeneous cuts without a device model).

        With ``shared_block`` every cut leaves the middle block on the server (see
        `shared_block_head_tails`), so clustering always has a common server block to read.
        """
        rng = random.Random(seed)
        options = shared_block_head_tails if shared_block else valid_head_tails
        g_options, d_options = options(g_blocks), options(d_blocks)
        cuts = tuple(Cut(*rng.choice(g_options), *rng.choice(d_options)) for _ in range(num_clients))
        return cls(cuts, g_blocks, d_blocks)


def _four(cut: Sequence[int]) -> tuple[int, int, int, int]:
    if len(cut) != 4:
        raise PlanError(f"A cut is four numbers [g_head, g_tail, d_head, d_tail]; got {list(cut)}.")
    return tuple(int(v) for v in cut)  # type: ignore[return-value]
