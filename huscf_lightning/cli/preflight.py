"""Pre-flight: every check a fit can make on its config, data, plan and checkpoint before a tracked run exists.

A fit that fails one of these leaves nothing in the MLflow store. The CLI runs `check_before_run` after the
classes are built and before ``trainer.fit`` (where the logger creates the run).
"""

from __future__ import annotations

from huscf_lightning.data import HuSCFDataModule
from huscf_lightning.engine.checkpoints import read_checkpoint
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.errors import ConfigError
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
    # builds the plan and the split networks, and lets the federation strategy check the clients (k, a shared
    # server D block for clustering, enough clients for clustering or discriminator swaps)
    model.configure_clients(
        datamodule.client_domains, datamodule.client_sizes, batch_size=datamodule.batch_size, progress_bar=progress_bar
    )
    if checkpoint is not None and SplitPlan.from_dict(checkpoint["plan"]) != model.plan:
        raise ConfigError(
            f"The checkpoint {ckpt_path} was trained with another split plan than this config builds; resume with "
            "the plan section (and seed) of the run that wrote it (its plan.json and config.yaml in MLflow)."
        )
