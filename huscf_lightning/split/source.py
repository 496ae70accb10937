"""Turn the plan section of the config into a `SplitPlan` (uniform, explicit, random, GA or exact)."""

from __future__ import annotations

from huscf_lightning.split.placement import SPLIT, Placement
from huscf_lightning.split.plan import PlanSpec, SplitPlan
from huscf_lightning.split.selection import GanNetworks, plan_latency, select_cuts


def build_plan(
    spec: PlanSpec,
    num_clients: int,
    networks: GanNetworks,
    seed: int,
    shared_d_block: bool = True,
    progress_bar: bool = True,
    placement: Placement = SPLIT,
) -> tuple[SplitPlan, dict]:
    """The plan for ``num_clients`` clients, and its report: the modeled iteration latency under the
    configured device profiles (``latency_s``, ``breakdown``, ``client_profiles``), plus the search
    record when the GA or the exact solver chose the cuts. Every run gets a latency so runs compare in MLflow.

    ``networks``: the generator and discriminator, profiled at the per-client training batch.
    ``placement``: a split takes the cuts from ``spec``; a placement that fixes its own plan (the
    baselines' whole networks, `Placement.fixed_plan`) ignores it.
    ``shared_d_block``: random, GA and exact plans keep a D block that every client runs on the server
    (clustered aggregation needs it); explicit and uniform plans are taken as given.
    ``progress_bar``: the GA shows one (a tick a generation) on stderr.
    """
    g, d = networks.generator.num_blocks, networks.discriminator.num_blocks
    plan = placement.fixed_plan(num_clients, g, d)
    if plan is not None:
        return plan, {"method": placement.name, **plan_latency(plan, networks, spec, seed)}
    if spec.source in ("ga", "exact"):
        selection = select_cuts(num_clients, networks, spec, seed, shared_d_block, progress_bar=progress_bar)
        return selection.plan, selection.to_dict()
    if spec.source == "uniform":
        plan = SplitPlan.uniform(spec.cut, num_clients, g, d)
    elif spec.source == "explicit":
        plan = SplitPlan.explicit(spec.cuts or [], num_clients, g, d)
    else:
        plan = SplitPlan.random(num_clients, g, d, seed, shared_block=shared_d_block)
    return plan, {"method": spec.source, **plan_latency(plan, networks, spec, seed)}
