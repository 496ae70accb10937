"""Placements: where a method's blocks live, and the parts of a training step that follow from it.

HuSCF-GAN and its ablations split every client's networks at the client's own cuts (`Split`); the
baselines put whole networks on one side. The engine never asks a method's name: it asks its placement
(a `FederationStrategy` carries one) for the plan it fixes, the labels its fakes are drawn for, how the
generated batch reaches the discriminator, how a batch's loss is normalised, what leaves a client before
training, and how one iteration's latency is modeled. A new placement is a subclass that overrides
the hooks it changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from huscf_lightning.split.devices import ProfileSet
from huscf_lightning.split.plan import SplitPlan
from huscf_lightning.split.profile import GanProfile
from huscf_lightning.split.whole_latency import central_latency, md_gan_latency, on_clients_latency
from huscf_lightning.split.wire import DOWN, UP, Wire


class Placement:
    """A split: every client runs its own head and tail, the server the blocks between (the method's own).

    Every hook's default is the split's behaviour, so a subclass overrides only what its method changes.
    """

    name: ClassVar[str] = "split"  # the plan's placement (`SplitPlan.placement`), recorded in plan.json
    splits_clients: ClassVar[bool] = True  # clients send cut-layer activations of their own inputs to the server

    def fixed_plan(self, num_clients: int, g_blocks: int, d_blocks: int) -> SplitPlan | None:
        """The plan this placement imposes, or None when the config's plan section chooses the cuts."""
        return None

    def latency(self, gan: GanProfile, profiles: ProfileSet, client_profiles: Sequence[str]) -> dict | None:
        """One iteration's modeled latency (``latency_s``, ``breakdown``), or None for the split latency model."""
        return None

    def fake_labels(self, labels: list[Tensor], round_sizes: list[int], local: list[int], draw: torch.Generator,
                    num_classes: int, device: torch.device) -> list[Tensor]:
        """The labels each resident client's fakes are generated for: by default its own batch's labels.

        ``round_sizes``: every round client's batch size (all processes); ``local``: the resident clients'
        positions among them; ``draw``: the run's noise stream, for a placement that draws labels itself.
        """
        return labels

    def deliver_fakes(
        self, fakes: list[Tensor], labels: Sequence[Tensor], wire: Wire, clients: Sequence[int]
    ) -> list[Tensor]:
        """The generated batches as the discriminators receive them (a split's tails are on the clients already)."""
        return fakes

    def loss_denominators(self, counts: Tensor, total: int) -> Tensor:
        """Per client, what its samples' losses are divided by: its batch size (the sum of the clients' mean
        losses). ``total``: the round's samples over every process."""
        return counts

    def upload_before_training(self, wire: Wire, clients: Sequence[int], datamodule: Any) -> None:
        """What leaves each of ``clients`` once, before the first step (a split: nothing)."""


class _WholeNetworks(Placement):
    """Whole networks on one side: the plan is fixed by the placement, whatever the plan section says."""

    splits_clients = False

    def fixed_plan(self, num_clients: int, g_blocks: int, d_blocks: int) -> SplitPlan | None:
        return SplitPlan.whole_networks(self.name, num_clients, g_blocks, d_blocks)


class OnClients(_WholeNetworks):
    """FedGAN and local training: every client runs all of G and D; nothing crosses during an iteration."""

    name = "client"

    def latency(self, gan: GanProfile, profiles: ProfileSet, client_profiles: Sequence[str]) -> dict | None:
        return on_clients_latency(gan, profiles, client_profiles)


class MDGANPlacement(_WholeNetworks):
    """MD-GAN: G wholly on the server, one D per client. The server draws the labels of every generated batch
    (uniform over classes) and sends each client its batch and those labels; real data never leaves a client."""

    name = "md_gan"

    def latency(self, gan: GanProfile, profiles: ProfileSet, client_profiles: Sequence[str]) -> dict | None:
        return md_gan_latency(gan, profiles, client_profiles)

    def fake_labels(self, labels: list[Tensor], round_sizes: list[int], local: list[int], draw: torch.Generator,
                    num_classes: int, device: torch.device) -> list[Tensor]:
        drawn = torch.randint(num_classes, (sum(round_sizes),), generator=draw, device=draw.device)
        per_client = drawn.to(device).split(round_sizes)
        return [per_client[p] for p in local]

    def deliver_fakes(
        self, fakes: list[Tensor], labels: Sequence[Tensor], wire: Wire, clients: Sequence[int]
    ) -> list[Tensor]:
        """Each generated batch and the labels it was drawn for go from the server to its client (the images'
        gradient comes back over the wire in the G step)."""
        sizes = [fake.shape[0] for fake in fakes]
        for i, drawn in zip(clients, labels):
            wire.account(i, "G.labels", DOWN, drawn.numel() * drawn.element_size(), "synthetic labels")
        carried = wire.send_group(torch.cat(list(fakes)), list(clients), sizes, "G.out", DOWN)
        return list(carried.split(sizes))


class Central(_WholeNetworks):
    """Centralized training: everything on the server over the uploaded union of the clients' data; the
    clients' batches are one batch and its loss their mean, exactly an unsplit cGAN step."""

    name = "central"

    def latency(self, gan: GanProfile, profiles: ProfileSet, client_profiles: Sequence[str]) -> dict | None:
        return central_latency(gan, profiles, client_profiles)

    def loss_denominators(self, counts: Tensor, total: int) -> Tensor:
        return torch.full_like(counts, total)

    def upload_before_training(self, wire: Wire, clients: Sequence[int], datamodule: Any) -> None:
        """Every client's data, once (the wire counts it); nothing without a datamodule that holds it."""
        if not hasattr(datamodule, "client_data"):
            return
        for i in clients:
            images, labels = datamodule.client_data(i)
            nbytes = images.numel() * images.element_size() + labels.numel() * labels.element_size()
            wire.account(i, "data", UP, nbytes, "raw data")


SPLIT, ON_CLIENTS, MD_GAN, CENTRAL = Placement(), OnClients(), MDGANPlacement(), Central()
_BY_NAME = {p.name: p for p in (SPLIT, ON_CLIENTS, MD_GAN, CENTRAL)}


def placement_of(plan: SplitPlan) -> Placement:
    """The placement a plan was made for (its recorded name), e.g. to model a saved plan's latency."""
    return _BY_NAME[plan.placement]
