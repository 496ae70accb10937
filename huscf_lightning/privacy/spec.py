"""The ``model.privacy`` section: which defences against a curious server a run turns on, and how strong.

Every defence is off by default, and a run with all of them off trains exactly as one without the section.
What each protects and costs is measured by the attacks (`huscf_lightning.privacy.attacks`); the README's
privacy section has the trade-off table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from huscf_lightning.errors import ConfigError

if TYPE_CHECKING:
    from huscf_lightning.federation.strategy import FederationStrategy


@dataclass
class PrivacySpec:
    """Defences against a server that follows the protocol but reads everything it handles.

    ``masked_aggregation``: the clients' own blocks are averaged under additive masks (`privacy.masking`): the
    server sums values it cannot read and only a group's members can remove the masks from the group's sum.
    The server's own blocks are averaged as without it.
    ``private_initialisation``: every client starts the blocks it holds from initial weights of its own
    (`privacy.initialisation`), which the server never learns; the server's blocks keep the shared initialisation.
    ``noise_multiplier``: Gaussian noise on what a client sends over a cut (its heads' activations and, with
    ``noise_on_gradients``, the gradients its tails return), each sample first clipped to an L2 norm of
    ``clip`` times the square root of its number of values (``clip`` is a per-value RMS bound; gradients use
    ``gradient_clip``); the noise's standard deviation per value is ``noise_multiplier`` times that bound.
    ``nopeek_weight``: weight of a distance-correlation penalty between each client's inputs and its heads'
    cut activations (NoPeek, Vepakomma et al. 2020), added to the client's loss.
    """

    masked_aggregation: bool = False
    private_initialisation: bool = False
    noise_multiplier: float = 0.0
    clip: float = 1.0
    noise_on_gradients: bool = True
    gradient_clip: float = 1e-3
    nopeek_weight: float = 0.0

    @property
    def noisy(self) -> bool:
        return self.noise_multiplier > 0

    def validate(self) -> None:
        """Raise a `ConfigError` naming the fix for a value no defence can use."""
        for name in ("noise_multiplier", "nopeek_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(
                    f"model.privacy.{name} must be a finite number >= 0 (0 turns the defence off); got {value}."
                )
        for name in ("clip", "gradient_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"model.privacy.{name} is the per-value RMS bound samples are clipped to before noise is added and "
                    f"must be a finite number > 0; got {value}."
                )

    def check_method(self, strategy: FederationStrategy) -> None:
        """Raise a `ConfigError` when a defence that is on cannot apply to ``strategy``'s method."""
        if self.masked_aggregation and not strategy.averages_clients:
            raise ConfigError(
                f"model.privacy.masked_aggregation hides the clients' blocks while they are averaged, but "
                f"federation.mode={strategy.name} averages no client blocks (it shares {strategy.shares}). Turn "
                "masked_aggregation off, or use a method that averages clients (fedavg, clustered, kld_clustered, fedgan)."
            )
        crossing = [name for name in ("noise_multiplier", "nopeek_weight") if getattr(self, name) > 0]
        if crossing and not strategy.placement.splits_clients:
            raise ConfigError(
                f"model.privacy.{' and '.join(crossing)} protect(s) the cut-layer activations of a split, but "
                f"federation.mode={strategy.name} splits no client's networks (it shares {strategy.shares}). Set "
                f"{' and '.join(crossing)} to 0, or use a split method (fedavg, clustered, kld_clustered)."
            )
