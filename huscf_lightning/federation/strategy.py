"""Federation strategies: what a round end does with the clients' copies, one class per rule.

A strategy is built from the config's `FederationSpec` and answers what the rest of the code would
otherwise read off a mode string: whether a round needs clustering, whether the split plan must
keep a discriminator block that every client runs on the server (the clustering and KLD features
come from it), whether these clients can run it at all, and the aggregation weights of a round
(warm-up included). In the spirit of Flower's ``Strategy``: a new rule is one subclass, registered
by name with `register_strategy`, or named by its class path in ``federation.mode``.

A method is a strategy with its placement (`split.placement`): HuSCF-GAN and its ablations split every
client's networks (`SPLIT`); the baselines the paper compares against put whole networks on one side:
FedGAN and local training on every client (`ON_CLIENTS`), MD-GAN's generator on the server with a
discriminator per client (`MD_GAN`), centralized training wholly on the server (`CENTRAL`). What a method
changes in local training (a proximal term, say) is asked of it through `start_round` and `local_penalty`;
the engine never compares a method's name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from huscf_lightning.errors import ConfigError
from huscf_lightning.federation.rounds import RoundState
from huscf_lightning.federation.weights import (
    AggregationWeights,
    clustered_aggregation,
    fedavg_aggregation,
    fedavg_weights,
    kld_clustered_aggregation,
)
from huscf_lightning.split.placement import CENTRAL, MD_GAN, ON_CLIENTS, SPLIT, Placement

if TYPE_CHECKING:
    from huscf_lightning.config import FederationSpec
    from huscf_lightning.split.network import SplitNetwork

_REGISTRY: dict[str, type[FederationStrategy]] = {}


class FederationStrategy:
    """Base strategy. Subclasses set ``name`` and implement `aggregate`.

    ``needs_clusters``: a `ClusteringRound` runs before aggregation and fills ``round.clusters``.
    ``needs_features``: the round carries the clients' server-side D features (``round.features``),
    so the plan keeps a D block that every client runs on the server. ``partial_participation``: whether
    the rule still means something when only some clients train in a round (``federation.participation``).
    ``averages_clients``: its round ends average client copies within groups (False: it averages nothing, or
    moves whole copies between clients).
    """

    name: ClassVar[str] = ""
    needs_clusters: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False
    placement: ClassVar[Placement] = SPLIT  # where the blocks live and what a step does because of it
    shares: ClassVar[str] = "cut-layer activations and their gradients"  # what leaves a client while training
    partial_participation: ClassVar[bool] = True
    averages_clients: ClassVar[bool] = True  # a round end averages client copies (masked aggregation can hide them)

    def __init__(self, spec: FederationSpec, seed: int = 0) -> None:
        self.spec = spec
        self.seed = seed

    def check_clients(self, num_clients: int) -> None:
        """Raise a `ConfigError` naming the fix when this strategy cannot run with ``num_clients`` clients."""

    def start_round(self, round_index: int, networks: dict[str, SplitNetwork]) -> None:
        """At the start of every round, its participants resident in ``networks`` (``"G"``, ``"D"``): e.g.
        keep the weights a proximal term pulls towards. Nothing by default."""

    def local_penalty(self, network: SplitNetwork) -> Tensor | None:
        """A term added to ``network``'s loss (the sum over its clients) at every step, or None for none."""
        return None

    def warming_up(self, round_index: int) -> bool:
        """The first ``warmup_rounds`` rounds are plain FedAvg whatever the strategy."""
        return round_index <= self.spec.warmup_rounds

    def round_mode(self, round_index: int) -> str:
        """The name of the rule a round used, for its record."""
        return "fedavg" if self.warming_up(round_index) else self.name

    def round_weights(self, round: RoundState) -> dict[str, AggregationWeights | None]:
        """Per network (``"G"``, ``"D"``): the weights its copies are averaged with this round, or None to
        leave that network as it is. By default both networks get `weights`."""
        weights = self.weights(round)
        return {"G": weights, "D": weights}

    def weights(self, round: RoundState) -> AggregationWeights:
        """The weights of this round's aggregation: FedAvg while warming up, else `aggregate`."""
        sizes = torch.as_tensor(round.client_sizes, dtype=torch.float64)
        if self.warming_up(round.index):
            return fedavg_aggregation(sizes)
        return self.aggregate(round, sizes)

    def aggregate(self, round: RoundState, sizes: torch.Tensor) -> AggregationWeights:
        """The weights after warm-up; ``sizes`` (K,) float64 are the clients' dataset sizes."""
        raise NotImplementedError


def register_strategy(cls: type[FederationStrategy]) -> type[FederationStrategy]:
    """Make ``cls`` selectable as ``federation.mode: <cls.name>`` (a class decorator)."""
    if not cls.name:
        raise ConfigError(f"{cls.__name__} needs a class attribute `name` to be registered as a federation strategy.")
    _REGISTRY[cls.name] = cls
    return cls


def known_strategies() -> list[str]:
    """The registered strategy names."""
    return list(_REGISTRY)


def strategy_class(mode: str) -> type[FederationStrategy]:
    """The strategy class ``mode`` names: a registered name, or ``package.module.ClassName``."""
    if mode in _REGISTRY:
        return _REGISTRY[mode]
    hint = (
        f"Use one of {', '.join(_REGISTRY)} (e.g. --model.federation.mode=fedavg), or the class path of your own "
        "FederationStrategy subclass (e.g. mypkg.strategies.MyStrategy)."
    )
    if "." not in str(mode):
        raise ConfigError(f"Unknown federation mode {mode!r}. {hint}")
    module_name, _, class_name = mode.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"federation.mode {mode!r} cannot be imported ({type(err).__name__}: {err}). {hint}") from err
    if not (isinstance(found, type) and issubclass(found, FederationStrategy)):
        raise ConfigError(f"federation.mode {mode!r} is not a FederationStrategy subclass. {hint}")
    return found


def build_strategy(spec: FederationSpec, seed: int = 0) -> FederationStrategy:
    """The strategy of the config's federation section (checked: its mode, then its values), for a run
    seeded with ``seed``."""
    spec.validate()
    return strategy_class(spec.mode)(spec, seed)


@register_strategy
class FedAvg(FederationStrategy):
    """Every client and the server load the size-weighted average of all clients (McMahan et al.)."""

    name = "fedavg"

    def aggregate(self, round: RoundState, sizes: torch.Tensor) -> AggregationWeights:
        return fedavg_aggregation(sizes)


@register_strategy
class Clustered(FederationStrategy):
    """Size-weighted averages inside k-means clusters of the clients' D features; the server: FedAvg."""

    name = "clustered"
    needs_clusters = True
    needs_features = True

    def check_clients(self, num_clients: int) -> None:
        if num_clients < 2:
            raise ConfigError(
                f"federation.mode={self.name} clusters clients, which needs at least 2 clients; this run has "
                f"{num_clients}. Use federation.mode=fedavg (or another non-clustering method) for one client."
            )
        k = self.spec.k
        if isinstance(k, int) and not 1 <= k <= num_clients:
            raise ConfigError(
                f"federation.k = {k} clusters is impossible with {num_clients} clients; choose k between 1 and "
                f"{num_clients}, 'auto', or null for the number of domains."
            )

    def aggregate(self, round: RoundState, sizes: torch.Tensor) -> AggregationWeights:
        return clustered_aggregation(sizes, _clusters(round))


@register_strategy
class KLDClustered(Clustered):
    """HuSCF-GAN: KLD weights n exp(-alpha s) inside clusters; the server: the same rule over all clients."""

    name = "kld_clustered"

    def aggregate(self, round: RoundState, sizes: torch.Tensor) -> AggregationWeights:
        if round.features is None:
            raise ConfigError("kld_clustered needs the round's clustering features; none were captured this round.")
        return kld_clustered_aggregation(sizes, round.features.double(), _clusters(round), self.spec.alpha)


def _clusters(round: RoundState) -> torch.Tensor:
    if round.clusters is None:
        raise ConfigError(
            "This federation strategy aggregates inside clusters, but no ClusteringRound callback ran this round; "
            "keep the one HuSCFGAN installs (it is added when the strategy's needs_clusters is true)."
        )
    return round.clusters


@register_strategy
class FedGAN(FedAvg):
    """FedGAN (Rasouli et al. 2020): every client trains a whole G and D on its own data; both are FedAvg-ed
    at every round end. No split, no server compute."""

    name = "fedgan"
    placement = ON_CLIENTS
    shares = "model weights at round ends"


@register_strategy
class LocalOnly(FederationStrategy):
    """Every client trains a whole G and D on its own data and never communicates (the lower bound)."""

    name = "local"
    placement = ON_CLIENTS
    shares = "nothing"
    averages_clients = False

    def round_weights(self, round: RoundState) -> dict[str, AggregationWeights | None]:
        return {"G": None, "D": None}


@register_strategy
class Centralized(FederationStrategy):
    """One G and D trained on the server over the union of all clients' data (the no-privacy upper bound):
    the clients' batches are one batch, the loss its mean, exactly an unsplit cGAN step."""

    name = "centralized"
    placement = CENTRAL
    shares = "raw data (images and labels)"
    partial_participation = False  # the data is uploaded once: every client is in every batch
    averages_clients = False

    def round_weights(self, round: RoundState) -> dict[str, AggregationWeights | None]:
        return {"G": None, "D": None}


@register_strategy
class MDGAN(FederationStrategy):
    """MD-GAN (Hardy et al. 2019): one generator on the server, one discriminator per client. The server
    sends each client a generated batch (and the labels it drew for it), the client returns the gradient
    of its discriminator's loss with respect to those images; at every round end the discriminators are
    swapped between clients along a seeded random derangement (each client's D moves to another client)."""

    name = "md_gan"
    placement = MD_GAN
    shares = "synthetic data (generated images and their labels, server to clients)"
    partial_participation = False  # the swap is a derangement over all the clients' discriminators
    averages_clients = False  # the discriminators are swapped, not averaged

    def check_clients(self, num_clients: int) -> None:
        if num_clients < 2:
            raise ConfigError(
                f"federation.mode=md_gan swaps discriminators between clients, which needs at least 2 clients; this "
                f"run has {num_clients}. Use federation.mode=centralized or local for one client."
            )

    def round_weights(self, round: RoundState) -> dict[str, AggregationWeights | None]:
        return {"G": None, "D": discriminator_swap(round.num_clients, self.seed, round.index)}


def discriminator_swap(num_clients: int, seed: int, round_index: int) -> AggregationWeights:
    """Weights that move client π(i)'s discriminator to client i, π a seeded random derangement (no client
    keeps its own): a permutation matrix, so each client loads exactly another client's weights."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + round_index)
    while True:
        source = torch.randperm(num_clients, generator=generator)
        if not bool((source == torch.arange(num_clients)).any()):
            break
    matrix = torch.zeros(num_clients, num_clients, dtype=torch.float64)
    matrix[torch.arange(num_clients), source] = 1.0
    return AggregationWeights(torch.arange(num_clients), matrix, fedavg_weights(torch.ones(num_clients)))

