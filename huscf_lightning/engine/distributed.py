"""Clients sharded over the processes of a Lightning data-parallel run, on torch.distributed.

With ``--trainer.strategy=ddp --trainer.devices=N`` (CPU with gloo, GPUs with NCCL, several nodes through
Lightning's cluster environments: torchrun, SLURM, ...) each process (rank) holds a contiguous share of
the round's clients (their stacked head and tail copies and their Adam state) and a replica of the server
blocks, which it runs over its own clients' activations. Whatever couples clients goes through
torch.distributed, so that N processes compute what one does:

The collectives themselves (`huscf_lightning.collectives`) sit below every layer, since the split networks,
the wire and the aggregation call them too:

- the server blocks' gradients are summed over ranks after each backward (`sum_gradients`): the one-process
  loss is a sum over clients, while DDP's reducer would average, and it fires per backward while a GAN
  step runs two, each with its own optimiser;
- the server's batch norm normalises with the moments of the whole server batch (`SyncedBatchNorm`);
- a round end gathers the clustering features and sums each rank's weighted client states and the
  wire's byte counts.

`ClientShardedDDP` is Lightning's `DDPStrategy` without the DistributedDataParallel wrapper: the ranks'
modules differ (each holds its own clients), so there is nothing for DDP to replicate or reduce. The CLI
turns ``ddp``, ``ddp_spawn``, ``ddp_fork`` and ``ddp_notebook`` into it.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, Strategy

from huscf_lightning.errors import ConfigError

DDP_NAMES = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


class ClientShardedDDP(DDPStrategy):
    """Lightning's DDP (processes, process group, launchers, cluster environments), minus the DDP wrapper."""

    strategy_name = "huscf_ddp"

    def configure_ddp(self) -> None:
        """Keep the module as it is: each rank holds other clients, and HuSCFGAN reduces what is shared itself."""


def check_strategy(strategy: Strategy, world_size: int, num_clients: int, participation: float, per_round: int) -> None:
    """Raise a `ConfigError` naming what works when this strategy cannot shard these clients (``per_round`` of
    them take part in a round, ``federation.participation`` = ``participation``)."""
    if isinstance(strategy, ClientShardedDDP) or (isinstance(strategy, SingleDeviceStrategy) and world_size == 1):
        pass
    elif isinstance(strategy, DDPStrategy):
        raise ConfigError(
            "Lightning's DDPStrategy wraps the model in DistributedDataParallel, which needs the same parameters on "
            "every rank; HuSCFGAN shards the clients over the ranks instead. Use strategy="
            "huscf_lightning.engine.distributed.ClientShardedDDP() from Python (the CLI turns --trainer.strategy=ddp into it)."
        )
    else:
        raise ConfigError(
            f"The {type(strategy).__name__} strategy cannot run HuSCFGAN: its clients are the data-parallel axis, and "
            "FSDP, DeepSpeed, model parallelism and the like shard or replicate parameters, not clients. Use one "
            "device, or --trainer.strategy=ddp with --trainer.devices=N (and --trainer.num_nodes for several nodes)."
        )
    if world_size > per_round:
        some = f"federation.participation={participation} lets {per_round} of them take part in a round" if per_round < num_clients else ""
        raise ConfigError(
            f"The run has {world_size} processes for {num_clients} clients{'; ' + some if some else ''}: every process "
            f"needs at least one client in every round. Use at most {per_round} devices (--trainer.devices x "
            "--trainer.num_nodes), or more clients" + (" or a higher participation." if some else ".")
        )


def client_shard(num_clients: int, world_size: int, rank: int) -> tuple[int, ...]:
    """The contiguous share of the clients that ``rank`` holds; shares differ by at most one client."""
    base, extra = divmod(num_clients, world_size)
    start = rank * base + min(rank, extra)
    return tuple(range(start, start + base + (rank < extra)))


def shard_clients_over_processes(trainer_config: Any) -> None:
    """In a parsed CLI config: turn Lightning's DDP strategies (``ddp``, ``ddp_spawn``, ...) into
    `ClientShardedDDP` with the same start method, and keep Lightning from splitting the batches (every rank
    reads every client's stream). Any other strategy that is not one device is refused here, before Lightning
    builds it (FSDP, DeepSpeed, model parallelism: they shard or replicate parameters, not clients)."""
    strategy = trainer_config.strategy
    if strategy is None or strategy in ("auto", "single_device"):
        return
    name = strategy if isinstance(strategy, str) else None
    class_path = "" if name is not None else str(getattr(strategy, "class_path", strategy))
    if name in DDP_NAMES:
        trainer_config.strategy = {
            "class_path": f"{ClientShardedDDP.__module__}.{ClientShardedDDP.__qualname__}",
            "init_args": {"start_method": DDP_NAMES[name]},
        }
        trainer_config.use_distributed_sampler = False
    elif class_path.endswith(ClientShardedDDP.__name__):
        trainer_config.use_distributed_sampler = False
    elif not class_path.endswith("SingleDeviceStrategy"):
        raise ConfigError(
            f"--trainer.strategy={name or class_path} cannot run HuSCFGAN: its clients are the data-parallel axis, "
            "and FSDP, DeepSpeed, model parallelism and the like shard or replicate parameters, not clients. Use "
            "one device (leave --trainer.strategy out), or --trainer.strategy=ddp with --trainer.devices=N (and "
            "--trainer.num_nodes for several nodes), which shards the clients over the processes."
        )
