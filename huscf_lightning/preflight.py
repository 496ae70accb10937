"""Pre-flight: every check a fit can make on its config, data, plan and checkpoint before a tracked run exists.

A fit that fails one of these leaves nothing in the MLflow store. The CLI runs `check_before_run` after the
classes are built and before ``trainer.fit`` (where the logger creates the run).
"""

from __future__ import annotations

from huscf_lightning.checkpoints import read_checkpoint
from huscf_lightning.config import ConfigError
from huscf_lightning.data import HuSCFDataModule
from huscf_lightning.module import HuSCFGAN
from huscf_lightning.split import SplitPlan


def check_before_run(model: HuSCFGAN, datamodule: HuSCFDataModule, ckpt_path: str | None, progress_bar: bool) -> None:
    """Load and partition the data, build the plan and the split networks, and check the checkpoint and the
    federation settings against them; raise the first problem as a one-paragraph error."""
    datamodule.setup("fit")
    if datamodule.num_classes > model.num_classes:
        raise ConfigError(
            f"The data has {datamodule.num_classes} classes but the model is built for num_classes="
            f"{model.num_classes}; set --model.num_classes={datamodule.num_classes}."
        )
    checkpoint = read_checkpoint(ckpt_path)["huscf"] if ckpt_path else None
    if checkpoint is not None and (
        checkpoint["client_domains"] != datamodule.client_domains or checkpoint["client_sizes"] != datamodule.client_sizes
    ):
        raise ConfigError(
            f"The checkpoint {ckpt_path} was trained on {len(checkpoint['client_domains'])} clients "
            f"{checkpoint['client_domains']} with sizes {checkpoint['client_sizes']}, but this data section gives "
            f"{datamodule.num_clients} clients {datamodule.client_domains} with sizes {datamodule.client_sizes}; "
            "resume with the data section of the run that wrote it (its config.yaml in MLflow)."
        )
    model.configure_clients(
        datamodule.client_domains, datamodule.client_sizes, batch_size=datamodule.batch_size, progress_bar=progress_bar
    )
    if checkpoint is not None and SplitPlan.from_dict(checkpoint["plan"]) != model.plan:
        raise ConfigError(
            f"The checkpoint {ckpt_path} was trained with another split plan than this config builds; resume with "
            "the plan section (and seed) of the run that wrote it (its plan.json and config.yaml in MLflow)."
        )
    check_federation(model)


def check_federation(model: HuSCFGAN) -> None:
    """The federation settings against the built clients and plan: a possible k, and a D block every client
    runs on the server whenever clients are clustered (its activations are the clustering features)."""
    federation = model.federation
    if federation.mode == "fedavg":
        return
    if isinstance(federation.k, int) and not 1 <= federation.k <= model.num_clients:
        raise ConfigError(
            f"federation.k = {federation.k} clusters is impossible with {model.num_clients} clients; choose k "
            f"between 1 and {model.num_clients}, 'auto', or null for the number of domains."
        )
    if model.D.common_server_block() is None:
        raise ConfigError(
            f"federation.mode={federation.mode} clusters clients on a discriminator block that every client runs on "
            f"the server, but the plan's D cuts {model.plan.head_tails('D')} share none. Use "
            "--model.federation.mode=fedavg, or cuts whose server parts overlap (e.g. every D head <= 2 and tail <= 2 "
            "for the 5-block reference network)."
        )
