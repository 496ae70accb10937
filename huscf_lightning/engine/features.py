"""The round's clustering features (METHOD.md): the server's output of the first discriminator block every
client runs there, for the real batch of the round's last step, averaged per client.

Clustered methods read them at a round end (k-means and the KLD weights); they are the only thing the
server computes from the clients' activations beyond the step itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from huscf_lightning.collectives import gather_objects
from huscf_lightning.errors import ConfigError
from huscf_lightning.federation.strategy import FederationStrategy
from huscf_lightning.split.network import ServerActivation, SplitNetwork
from huscf_lightning.split.plan import SplitPlan


def clustering_feature_block(strategy: FederationStrategy, D: SplitNetwork, plan: SplitPlan) -> int | None:
    """The D block whose server output is the round's clustering feature: the first one every client runs on
    the server, for a method that needs features (None otherwise); a plan without one is refused."""
    if not strategy.needs_features:
        return None
    block = D.common_server_block()
    if block is None:
        raise ConfigError(
            f"federation.mode={strategy.spec.mode} needs a discriminator block that every client runs on the "
            f"server, but the plan's D cuts {plan.head_tails('D')} share none. Use federation.mode=fedavg, or cuts "
            "whose server parts overlap (e.g. every D head <= 2 and tail <= 2 for the 5-block reference network)."
        )
    return block


def round_features(activation: ServerActivation | None, resident: int, sharded: bool) -> Tensor:
    """(K, C, L) features of the round's clients, in client order, from the activation kept at its last step:
    channels by positions, as the KLD needs (a flat (K, D) activation is one channel of D positions)."""
    if activation is None:
        raise RuntimeError("The round ended before any step of its last epoch ran; no clustering features.")
    means = activation.client_means(resident)
    if sharded:  # every rank's clients, in client order (the shards are contiguous, in rank order)
        means = torch.cat([part.to(means.device) for part in gather_objects(means.cpu())])
    return means.flatten(2) if means.dim() > 2 else means.unsqueeze(1)


class RoundFeatures:
    """The D block the round's clustering feature is read at (None for a method that needs none), and the
    activation the last step of a round's last epoch kept there, until the round end takes it."""

    def __init__(self, block: int | None) -> None:
        self.block = block
        self.kept: ServerActivation | None = None

    def take(self, resident: int, sharded: bool) -> Tensor | None:
        """The round's (K, C, L) features (`round_features`), or None for a method that needs none."""
        if self.block is None:
            return None
        kept, self.kept = self.kept, None
        return round_features(kept, resident, sharded)
