"""Cut selection: profile the networks, model the latency, search the cuts, return a SplitPlan.

This is the one entry point the fit run and the ``cuts`` command use.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .devices import ProfileSet, assign_profiles, load_profiles
from .exhaustive import exact_optimum
from .ga import GaSettings, run_ga
from .latency import LatencyModel
from .placement import placement_of
from .plan import Cut, PlanError, PlanSpec, SplitPlan
from .profile import GanProfile, profile_gan


@dataclass(frozen=True)
class CutSelection:
    """The chosen plan, the device type of every client, and the modeled latency behind it."""

    plan: SplitPlan
    client_profiles: tuple[str, ...]
    latency_s: float
    breakdown: dict
    client_busy_s: tuple[float, ...]
    gan_profile: GanProfile
    profiles: ProfileSet
    method: str
    search: dict

    def per_profile(self) -> list[dict]:
        """One row per device type in use: clients, cuts taken (with counts), busy time and its share.

        ``busy_s`` is the per-iteration time the slowest client of that type spends computing or
        transferring; ``share`` is that over the iteration latency.
        """
        rows = []
        for name in self.profiles.names:
            members = [i for i, p in enumerate(self.client_profiles) if p == name]
            if not members:
                continue
            cuts = Counter(self.plan.cuts[i].as_tuple() for i in members)
            busy = max(self.client_busy_s[i] for i in members)
            rows.append(
                {
                    "profile": name,
                    "clients": len(members),
                    "cuts": [{"cut": list(cut), "clients": count} for cut, count in sorted(cuts.items())],
                    "busy_s": busy,
                    "share": busy / self.latency_s,
                }
            )
        return rows

    def to_dict(self) -> dict:
        """Everything needed to recompute the latency: plan, profiles, per-block FLOPs and bytes."""
        return {
            "latency_s": self.latency_s,
            "method": self.method,
            "search": self.search,
            "breakdown": self.breakdown,
            "per_profile": self.per_profile(),
            "client_profiles": list(self.client_profiles),
            "plan": self.plan.to_dict(),
            "device_profiles": self.profiles.to_dict(),
            "block_profiles": self.gan_profile.to_dict(),
        }


@dataclass(frozen=True)
class GanNetworks:
    """The networks whose blocks the latency model profiles, and the batch they are profiled at.

    ``z_dim``/``num_classes`` default to the generator's attributes of those names.
    """

    generator: nn.Module
    discriminator: nn.Module
    batch_size: int = 64
    z_dim: int | None = None
    num_classes: int | None = None

    def profile(self) -> GanProfile:
        """Per-block FLOPs and bytes of both networks at ``batch_size``."""
        z_dim = self._attribute("z_dim", self.z_dim)
        num_classes = self._attribute("num_classes", self.num_classes)
        probe = copy.deepcopy(self.generator).eval()  # one sample's shape (D's input), from a private copy of G
        with torch.no_grad():
            out = probe(torch.zeros(2, z_dim), torch.arange(2) % num_classes)
        image_shape = tuple(int(d) for d in out.shape[1:])
        return profile_gan(self.generator, self.discriminator, self.batch_size, z_dim, image_shape, num_classes)

    def _attribute(self, name: str, given: int | None) -> int:
        if given is not None:
            return given
        value = getattr(self.generator, name, None)
        if not isinstance(value, int):
            raise PlanError(
                f"Cannot tell the generator's {name}: {type(self.generator).__name__} has no integer attribute "
                f"`{name}`. Pass GanNetworks({name}=...)."
            )
        return value


def _devices(spec: PlanSpec, num_clients: int, seed: int) -> tuple[ProfileSet, list[str]]:
    """The plan section's device profiles and every client's device type (`assign_profiles`)."""
    profile_set = spec.profiles if isinstance(spec.profiles, ProfileSet) else load_profiles(spec.profiles)
    return profile_set, assign_profiles(num_clients, profile_set, seed, spec.assignment)


def ga_search(
    model: LatencyModel, settings: GaSettings, seed: int, progress: Callable[[int, float], None] | None, bar: bool
) -> tuple[np.ndarray, np.ndarray, dict]:
    """GA over one G gene and one D gene per client; clients of a device type are interchangeable.

    Returns the best G and D option indices and the search record (scores, generations, settings).
    """
    clients = model.num_clients

    def score(population: np.ndarray) -> np.ndarray:
        return model.score(population[:, :clients], population[:, clients:])

    cardinality = [model.generator.num_options] * clients + [model.discriminator.num_options] * clients
    members = [np.flatnonzero(model.client_groups == g) for g in range(model.num_groups)]
    symmetry = members + [m + clients for m in members]
    result = run_ga(score, cardinality, settings, seed, symmetry, on_generation=progress, progress_bar=bar)
    return result.best[:clients], result.best[clients:], {**result.to_dict(), "settings": asdict(settings)}


def select_cuts(
    num_clients: int,
    networks: GanNetworks,
    spec: PlanSpec,
    seed: int = 0,
    shared_d_block: bool = False,
    on_generation: Callable[[int, float], None] | None = None,
    progress_bar: bool = False,
) -> CutSelection:
    """Choose every client's four cuts to minimise the modeled iteration latency.

    From the plan section ``spec``: its device ``profiles`` (a file, a packaged name such as "paper", or a
    loaded `ProfileSet`), the clients' device names in ``assignment`` (else even with a seeded remainder),
    and the search: ``source: exact`` for the exact optimum (`exact_optimum`, method auto), else the GA with
    the ``ga`` settings (see `GaSettings`). ``shared_d_block``: only D cuts that leave one block common to
    every client on the server (clustered aggregation reads its features there).
    """
    profile_set, client_profiles = _devices(spec, num_clients, seed)
    gan = networks.profile()
    model = LatencyModel.build(gan, profile_set, client_profiles, shared_d_block)
    if spec.source == "exact":
        found = exact_optimum(model)
        g_genes, d_genes, search, method = found.g_genes, found.d_genes, found.to_dict(), f"exact ({found.method})"
    else:
        settings = GaSettings.from_mapping(spec.ga)
        g_genes, d_genes, search = ga_search(model, settings, seed, on_generation, progress_bar)
        method = "ga"
    g_options, d_options = model.generator.options, model.discriminator.options
    cuts = tuple(Cut(*g_options[g], *d_options[d]) for g, d in zip(g_genes, d_genes))
    plan = SplitPlan(cuts, gan.generator.num_blocks, gan.discriminator.num_blocks)
    breakdown = model.breakdown(g_genes, d_genes)
    return CutSelection(
        plan=plan,
        client_profiles=tuple(client_profiles),
        latency_s=float(breakdown["iteration_s"]),
        breakdown=breakdown,
        client_busy_s=tuple(float(b) for b in model.client_busy_s(g_genes, d_genes)),
        gan_profile=gan,
        profiles=profile_set,
        method=method,
        search=search,
    )


def plan_latency(plan: SplitPlan, networks: GanNetworks, spec: PlanSpec | None = None, seed: int = 0) -> dict:
    """Modeled iteration latency of any given plan (random, explicit, GA, or a baseline's whole-network
    placement, whose own model `Placement.latency` gives) under the plan section's device profiles.

    Clients get their device types exactly as `select_cuts` assigns them for the same ``spec`` and
    ``seed``, so a GA plan scores its own ``latency_s`` and other plans are comparable with it. Returns
    ``latency_s``, the per-phase ``breakdown``, ``client_profiles`` and ``client_busy_s``.
    """
    profile_set, client_profiles = _devices(spec or PlanSpec(), plan.num_clients, seed)
    gan = networks.profile()
    whole = placement_of(plan).latency(gan, profile_set, client_profiles)
    if whole is not None:
        return {**whole, "client_profiles": list(client_profiles)}
    if (gan.generator.num_blocks, gan.discriminator.num_blocks) != (plan.g_blocks, plan.d_blocks):
        raise PlanError(
            f"The plan cuts networks of {plan.g_blocks} (G) and {plan.d_blocks} (D) blocks, but the given networks "
            f"have {gan.generator.num_blocks} and {gan.discriminator.num_blocks}; pass the networks the plan was made for."
        )
    model = LatencyModel.build(gan, profile_set, client_profiles, shared_d_block=False)
    g_genes = [model.generator.options.index(cut) for cut in plan.head_tails("G")]
    d_genes = [model.discriminator.options.index(cut) for cut in plan.head_tails("D")]
    breakdown = model.breakdown(g_genes, d_genes)
    return {
        "latency_s": float(breakdown["iteration_s"]),
        "breakdown": breakdown,
        "client_profiles": list(client_profiles),
        "client_busy_s": [float(b) for b in model.client_busy_s(g_genes, d_genes)],
    }
