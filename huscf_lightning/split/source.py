"""Turn the plan section of the config into a `SplitPlan` (uniform, explicit, random or GA)."""

from __future__ import annotations

from huscf_lightning.config import PlanSpec
from huscf_lightning.nets import BlockNetwork
from huscf_lightning.split.plan import SplitPlan


def build_plan(
    spec: PlanSpec,
    num_clients: int,
    generator: BlockNetwork,
    discriminator: BlockNetwork,
    seed: int,
    shared_d_block: bool = True,
) -> tuple[SplitPlan, dict | None]:
    """The plan for ``num_clients`` clients, plus the GA's report (profiles, latency) when it chose the cuts.

    ``shared_d_block``: random and GA plans keep a D block that every client runs on the server
    (clustered aggregation needs it); explicit and uniform plans are taken as given.
    """
    g, d = generator.num_blocks, discriminator.num_blocks
    if spec.source == "uniform":
        return SplitPlan.uniform(spec.cut, num_clients, g, d), None
    if spec.source == "explicit":
        return SplitPlan.explicit(spec.cuts or [], num_clients, g, d), None
    if spec.source == "random":
        return SplitPlan.random(num_clients, g, d, seed, shared_block=shared_d_block), None
    from huscf_lightning.split.selection import select_cuts

    selection = select_cuts(
        num_clients,
        generator,
        discriminator,
        profiles=spec.profiles,
        assignment=spec.assignment,
        seed=seed,
        ga=spec.ga,
        progress_bar=True,
        shared_d_block=shared_d_block,
    )
    return selection.plan, selection.to_dict()
