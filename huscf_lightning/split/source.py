"""Turn the plan section of the config into a `SplitPlan` (uniform, explicit, random, GA or exact)."""

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
    z_dim: int | None = None,
    num_classes: int | None = None,
    batch_size: int = 64,
    progress_bar: bool = True,
    placement: str = "split",
) -> tuple[SplitPlan, dict]:
    """The plan for ``num_clients`` clients, and its report: the modeled iteration latency under the
    configured device profiles (``latency_s``, ``breakdown``, ``client_profiles``), plus the search
    record when the GA or the exact solver chose the cuts. Every run gets a latency so runs compare in MLflow.

    ``placement``: ``split`` takes the cuts from ``spec``; a baseline's placement (``client``, ``md_gan``,
    ``central``: `SplitPlan.whole_networks`) ignores it.
    ``shared_d_block``: random, GA and exact plans keep a D block that every client runs on the server
    (clustered aggregation needs it); explicit and uniform plans are taken as given.
    ``batch_size``: the per-client training batch, at which the blocks are profiled. ``progress_bar``:
    the GA shows one (a tick a generation) on stderr.
    """
    from huscf_lightning.split.selection import plan_latency, select_cuts

    g, d = generator.num_blocks, discriminator.num_blocks
    if placement != "split":  # a baseline: whole networks on one side, whatever the plan section says
        plan = SplitPlan.whole_networks(placement, num_clients, g, d)
    elif spec.source in ("ga", "exact"):
        selection = select_cuts(
            num_clients,
            generator,
            discriminator,
            profiles=spec.profiles,
            assignment=spec.assignment,
            seed=seed,
            ga=spec.ga,
            exact=spec.source == "exact",
            progress_bar=progress_bar,
            shared_d_block=shared_d_block,
            z_dim=z_dim,
            num_classes=num_classes,
            batch_size=batch_size,
        )
        return selection.plan, selection.to_dict()
    elif spec.source == "uniform":
        plan = SplitPlan.uniform(spec.cut, num_clients, g, d)
    elif spec.source == "explicit":
        plan = SplitPlan.explicit(spec.cuts or [], num_clients, g, d)
    else:
        plan = SplitPlan.random(num_clients, g, d, seed, shared_block=shared_d_block)
    report = plan_latency(
        plan,
        generator,
        discriminator,
        spec.profiles,
        spec.assignment,
        seed,
        batch_size=batch_size,
        z_dim=z_dim,
        num_classes=num_classes,
    )
    return plan, {"method": spec.source if placement == "split" else placement, **report}
