"""What a HuSCFGAN checkpoint holds beside Lightning's own keys (its ``"huscf"`` section), written and read in
one place.

The section makes a checkpoint self-contained: the clients and the plan (so ``evaluate`` rebuilds the run
without its config), the round's participants and the waiting clients' stores, the noise stream and the
wire's counts (so a resumed run continues bit for bit), how to rebuild the networks, and the MLflow run to
continue. It is always written in the one-process layout, whatever the number of processes
(`sharded_checkpoint`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from huscf_lightning.collectives import gather_objects
from huscf_lightning.engine import sharded_checkpoint
from huscf_lightning.engine.tracking import mlflow_logger
from huscf_lightning.errors import ConfigError
from huscf_lightning.nets import BlockNetwork
from huscf_lightning.split.plan import SplitPlan
from huscf_lightning.split.wire import Wire

if TYPE_CHECKING:
    from huscf_lightning.engine.module import HuSCFGAN

STATE_LAYOUT = "stacked-clients-v1"  # the checkpoint layout of the clients' copies (split.stacked)
_TEMPLATE_KEYS = ("generator_template.", "discriminator_template.")  # before the templates left the parameters


def write_run_state(module: HuSCFGAN, checkpoint: dict) -> None:
    """Add the run's ``"huscf"`` section. A run sharded over processes gathers every client's rows first (a
    collective: Lightning calls this on every rank, rank 0 writes)."""
    roster, wire = module.roster, module.wire.state_dict()
    if roster.sharded:
        sharded_checkpoint.gather(checkpoint, {"G.": module.G, "D.": module.D}, roster.members)
        wire = Wire.summed_state(gather_objects(wire))
    checkpoint["huscf"] = {
        "layout": STATE_LAYOUT,
        "resident": list(roster.members),  # the round's clients, whatever the number of processes
        # with every client resident the stacks are the whole state; else the waiting clients' models too
        "stores": {"G": module.G.store.state_dict(), "D": module.D.store.state_dict()} if roster.partial else None,
        "plan": roster.plan.to_dict(),
        "plan_report": module.plan_report,
        "client_domains": roster.client_domains,
        "client_sizes": roster.client_sizes,
        "noise_rng": module.noise.get_state(),
        "wire": wire,  # the round so far, for a checkpoint taken inside a round
        "networks": {"generator": network_spec(module.generator_template),
                     "discriminator": network_spec(module.discriminator_template)},
        "mlflow_run_id": _mlflow_run_id(module),
    }


def read_run_state(module: HuSCFGAN, checkpoint: dict) -> None:
    """Rebuild the clients from the section (or check them against the ones built), make the checkpoint's
    participants resident (this rank's share of them) before Lightning loads the rows, restore the streams."""
    state, held = checkpoint.get("huscf"), checkpoint.get("state_dict", {})
    for key in [k for k in held if k.startswith(_TEMPLATE_KEYS)]:
        del held[key]
    _check_layout(state, held)
    plan = SplitPlan.from_dict(state["plan"])
    if module.G is None:
        module.plan_report = state["plan_report"]
        module.configure_clients(state["client_domains"], state["client_sizes"], plan=plan)
    elif plan != module.plan:
        raise ConfigError(
            "The checkpoint's split plan differs from this run's plan; resume with the same plan section "
            "(the plan is logged as plan.json with every run)."
        )
    roster = module.roster
    roster.members = tuple(state["resident"])  # the round's clients, as one process holds them
    mine = roster.share(roster.members)
    for net in (module.G, module.D):
        if state["stores"] is not None:
            net.store.load_state_dict(state["stores"][net.name])
        if net.resident != mine:
            net.set_resident(mine)
    if roster.sharded:  # keep this rank's clients' rows, whatever number of processes wrote the checkpoint
        sharded_checkpoint.shard(checkpoint, {"G.": module.G, "D.": module.D}, roster.members)
    saved = next((t.dtype for t in held.values() if torch.is_tensor(t) and t.is_floating_point()), None)
    if saved is not None:
        # Lightning loads the weights before the precision plugin converts the module: networks built in
        # float32 would round a float64 (64-true) checkpoint's weights on the way in
        module.G.to(saved)
        module.D.to(saved)
    module.noise.set_state(state["noise_rng"])
    module.wire.load_state_dict(state["wire"])
    if roster.sharded and roster.world()[1] != 0:
        module.wire.reset()  # the counts so far are the whole run's: rank 0 carries them, the ranks' sum is right
    module.resumed_from_run = state.get("mlflow_run_id")


def _check_layout(state: dict | None, held: dict) -> None:
    if state is None:
        raise ConfigError(
            "This checkpoint was not written by HuSCFGAN (no 'huscf' section): resume only from checkpoints of a "
            "huscf_lightning run (they are under checkpoints/ and logged to MLflow as artifacts)."
        )
    if state.get("layout") != STATE_LAYOUT or any(k.startswith(("G.client_blocks.", "D.client_blocks.")) for k in held):
        raise ConfigError(
            "This checkpoint was written by an older huscf_lightning that kept a module per client "
            "(G.client_blocks.<client>.<block>...); this version stacks the clients' copies of a block into one "
            "tensor per parameter and cannot resume or evaluate it. Resume it with the huscf_lightning version "
            "that wrote it, or start a new run."
        )


def _mlflow_run_id(module: HuSCFGAN) -> str | None:
    """The MLflow run this training logs to, so a run resumed from the checkpoint can name it."""
    logger = mlflow_logger(module._trainer) if module._trainer is not None else None
    return logger.run_id if logger is not None else None


def network_spec(net: BlockNetwork) -> dict | None:
    """How to rebuild ``net`` (class path and constructor arguments) when it records them in ``init_args``, as the
    reference networks do; a checkpoint keeps it so ``evaluate`` can rebuild the run's networks (its weights come
    from the checkpoint). None for a network that does not say how it was built."""
    init_args = getattr(net, "init_args", None)
    if not isinstance(init_args, dict):
        return None
    return {"class_path": f"{type(net).__module__}.{type(net).__qualname__}", "init_args": dict(init_args)}
