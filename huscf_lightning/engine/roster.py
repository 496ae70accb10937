"""The client roster: who the clients are, where each one's blocks live, which process holds them, and who
takes part in the current round.

HuSCFGAN asks the roster instead of keeping this bookkeeping beside the GAN step. With one process and
every client in every round its answers are trivial; runs sharded over processes and runs with partial
participation differ from the paper's single-process iteration only here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from huscf_lightning.compat import uses_distributed_sampler
from huscf_lightning.engine.distributed import check_strategy, client_shard
from huscf_lightning.engine.templates import NetworkTemplates
from huscf_lightning.errors import ConfigError
from huscf_lightning.federation.participation import clients_per_round, draw_participants
from huscf_lightning.federation.rounds import RoundState
from huscf_lightning.federation.strategy import FederationStrategy
from huscf_lightning.split.network import SplitNetwork
from huscf_lightning.split.plan import SplitPlan
from huscf_lightning.split.wire import Wire

log = logging.getLogger(__name__)


class ClientRoster:
    """The clients (domain and dataset size each), the plan that says where their blocks live, and the
    round's participants; ``world`` tells (processes, this one's rank) when asked."""

    def __init__(
        self,
        client_domains: Sequence[str],
        client_sizes: Sequence[int],
        participation: float,
        seed: int,
        world: Callable[[], tuple[int, int]],
    ) -> None:
        self.client_domains = list(client_domains)
        self.client_sizes = [int(n) for n in client_sizes]
        self.participation = participation
        self.seed = seed
        self.world = world
        self.plan: SplitPlan | None = None
        self.members: tuple[int, ...] = draw_participants(self.num_clients, participation, seed, 1)

    @property
    def num_clients(self) -> int:
        return len(self.client_domains)

    @property
    def partial(self) -> bool:
        """Whether only some clients train in a round (``federation.participation`` below every client)."""
        return clients_per_round(self.num_clients, self.participation) < self.num_clients

    @property
    def sharded(self) -> bool:
        """Whether the clients are sharded over several processes."""
        return self.world()[0] > 1

    def check_method(self, strategy: FederationStrategy) -> None:
        """Refuse a method that cannot run on these clients, or on the share of them a round draws."""
        strategy.check_clients(self.num_clients)
        if len(self.members) < self.num_clients:
            if not strategy.partial_participation:
                raise ConfigError(
                    f"federation.mode={strategy.spec.mode} needs every client in every round, but "
                    f"federation.participation={self.participation} lets {len(self.members)} of "
                    f"{self.num_clients} take part; use participation 1.0 with it."
                )
            strategy.check_clients(len(self.members))

    def check_same(self, client_domains: Sequence[str], client_sizes: Sequence[int]) -> None:
        """Refuse data whose clients are not the ones this roster (and so a checkpoint) was built for."""
        if list(client_domains) != self.client_domains or list(client_sizes) != self.client_sizes:
            raise ConfigError(
                f"This model was built for {self.num_clients} clients {self.client_domains} with sizes "
                f"{self.client_sizes}, but the data now has {len(client_domains)} clients {list(client_domains)} "
                f"with sizes {list(client_sizes)}. Use the same data section as the run that made the checkpoint."
            )

    def split_networks(
        self, plan: SplitPlan, templates: NetworkTemplates, wire: Wire, batch_clients: bool | None
    ) -> tuple[SplitNetwork, SplitNetwork]:
        """G and D cut at the plan's cuts, the first round's participants resident."""
        self.plan = plan
        G = SplitNetwork(templates.generator, plan.head_tails("G"), "G", wire, batch_clients, self.members)
        D = SplitNetwork(templates.discriminator, plan.head_tails("D"), "D", wire, batch_clients, self.members)
        return G, D

    def start_round(self, round_index: int, networks: Sequence[SplitNetwork]) -> bool:
        """With partial participation: draw round ``round_index``'s participants (the same on every process)
        and make this process's share of them resident in ``networks`` (the previous ones went to the store at
        the last round end). Returns whether the participants changed (every client in every round: no)."""
        if not self.partial:
            return False
        self.members = draw_participants(self.num_clients, self.participation, self.seed, round_index)
        for net in networks:
            net.set_resident(self.share(self.members))
        log.info("round %d: clients %s take part", round_index, list(self.members))
        return True

    def round_state(self, round_index: int, is_last: bool, features: Tensor | None) -> RoundState:
        """A round end's state over the round's members (client order)."""
        clients = list(self.members)
        domains, sizes = [self.client_domains[i] for i in clients], [self.client_sizes[i] for i in clients]
        return RoundState(round_index, domains, sizes, is_last, features, clients=clients)

    def share(self, clients: Sequence[int]) -> tuple[int, ...]:
        """This process's contiguous share of ``clients`` (all of them in one process)."""
        world, rank = self.world()
        return tuple(clients[i] for i in client_shard(len(clients), world, rank)) if world > 1 else tuple(clients)

    def local_positions(self, resident: Sequence[int]) -> list[int]:
        """Where this process's ``resident`` clients sit among the round's members."""
        if len(self.members) == len(resident):
            return list(range(len(self.members)))
        where = {client: p for p, client in enumerate(self.members)}
        return [where[client] for client in resident]

    def shard(
        self, networks: Sequence[SplitNetwork], input_shapes: Callable[[], dict[str, list[tuple[int, ...]]]]
    ) -> bool:
        """In a run sharded over processes: make this rank's share of the round's members resident (rebuilt
        from their initial state: nothing has trained yet) and the server blocks a replica of a sharded server.
        Returns whether anything changed (one process, or sharded already: no)."""
        world, _ = self.world()
        if world == 1 or networks[0].resident != self.members:
            return False
        shapes = input_shapes()
        for net in networks:
            net.set_resident(self.share(self.members))
            net.shard_server(shapes[net.name])
        log.info("clients sharded over %d processes, %d each at most", world, -(-len(self.members) // world))
        return True


def check_processes(trainer: pl.Trainer, num_clients: int, participation: float) -> None:
    """Refuse a Trainer strategy or process count that cannot shard these clients, naming what works."""
    world = trainer.world_size
    check_strategy(trainer.strategy, world, num_clients, participation, clients_per_round(num_clients, participation))
    if world > 1 and uses_distributed_sampler(trainer):
        raise ConfigError(
            "A run sharded over processes needs Trainer(use_distributed_sampler=False): every rank reads every "
            "client's batch stream (HuSCFGAN trains its own clients on it), so Lightning must not split the "
            "batches itself. The CLI sets it; set it when you build the Trainer in Python."
        )


def client_datamodule(trainer: pl.Trainer | None, stage: str, num_classes: int) -> Any:
    """The Trainer's datamodule, set up, when it can say who the clients are (a `HuSCFDataModule`) and its
    classes fit the model; else a `ConfigError` naming the fix."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is None or not hasattr(datamodule, "client_domains"):
        raise ConfigError(
            "HuSCFGAN needs to know its clients: train it with a HuSCFDataModule, or call "
            "model.configure_clients(client_domains, client_sizes) before trainer.fit."
        )
    datamodule.setup(stage)
    if getattr(datamodule, "num_classes", num_classes) > num_classes:
        raise ConfigError(
            f"The data has {datamodule.num_classes} classes but the model is built for num_classes="
            f"{num_classes}; set --model.num_classes={datamodule.num_classes}."
        )
    return datamodule
