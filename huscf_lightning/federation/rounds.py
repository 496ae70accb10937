"""Rounds: their schedule on Lightning's epochs, and what one round end knows, handed forward from round
callback to round callback.

The module opens a `RoundState` when a round ends (its index, the clients, the clustering features
captured during the round) and the round callbacks run over it in stage order: clustering writes
the clusters, aggregation the weights it used, evaluation its scores. Nothing travels between them
through attributes of the module or of each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import Tensor

from huscf_lightning.errors import ConfigError

if TYPE_CHECKING:
    from huscf_lightning.federation.weights import AggregationWeights


@dataclass
class RoundState:
    """One round end: filled in as the round callbacks act on it. ``is_last``: the run's final round.

    The round's clients are the ones that took part in it (every client unless ``federation.participation``
    is below 1): ``clients`` holds their global indices, and ``client_domains``, ``client_sizes``,
    ``features``, ``clusters`` and the weights are over them, in that order.
    ``features``: (K, C, L) batch mean of every client's last real batch at the first D block every
    client runs on the server, as channels by positions (None when the federation strategy needs none). ``clusters``: (K,) the
    cluster of every client, from the clustering callback. ``weights``: per network (``"G"``, ``"D"``)
    the aggregation that was applied, None where the strategy left the network as it was. ``metrics``: round metrics callbacks want to share (e.g. ``eval/score_mean``).
    """

    index: int
    client_domains: list[str]
    client_sizes: list[int]
    is_last: bool = False
    features: Tensor | None = None
    clusters: Tensor | None = None
    weights: dict[str, AggregationWeights | None] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    clients: list[int] | None = None

    def __post_init__(self) -> None:
        if self.clients is None:
            self.clients = list(range(len(self.client_domains)))

    @property
    def num_clients(self) -> int:
        return len(self.client_domains)

    @property
    def domain_names(self) -> list[str]:
        """The domains in the order their first client appears."""
        return list(dict.fromkeys(self.client_domains))


@dataclass(frozen=True)
class RoundSchedule:
    """``rounds`` rounds of ``local_epochs`` epochs each, read off Lightning's epoch counter."""

    rounds: int
    local_epochs: int

    @property
    def max_epochs(self) -> int:
        return self.rounds * self.local_epochs

    def is_round_start(self, epoch: int) -> bool:
        return epoch % self.local_epochs == 0

    def is_round_end(self, epoch: int) -> bool:
        """True during the last epoch of a round (callbacks act in its on_train_epoch_end)."""
        return (epoch + 1) % self.local_epochs == 0

    def round_of(self, epoch: int, max_epochs: int | None) -> int:
        """1-based index of the round ``epoch`` belongs to (the last round's after training, when Lightning's
        counter sits one past the Trainer's ``max_epochs``)."""
        if max_epochs is not None and max_epochs > 0:
            epoch = min(epoch, max_epochs - 1)
        return epoch // self.local_epochs + 1

    def check_trainer(self, max_epochs: int | None, max_steps: int) -> None:
        """Refuse a Trainer length that is not these rounds: a partial round would never be aggregated."""
        if max_steps == -1 and max_epochs != self.max_epochs:
            raise ConfigError(
                f"The Trainer runs max_epochs={max_epochs} but this model trains rounds={self.rounds} x "
                f"local_epochs={self.local_epochs} = {self.max_epochs} epochs; use "
                "Trainer(max_epochs=model.max_epochs) (the CLI sets it from model.rounds)."
            )
