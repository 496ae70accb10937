"""A saved run rebuilt from its checkpoint alone: the model with its networks and clients, and its datamodule
(what ``evaluate``, ``privacy`` and a comparison's attacks on a finished cell start from)."""

from __future__ import annotations

import importlib

from huscf_lightning.data import HuSCFDataModule
from huscf_lightning.engine.checkpoints import read_checkpoint
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.errors import ConfigError
from huscf_lightning.nets import BlockNetwork


def load_run(ckpt_path: str) -> tuple[HuSCFGAN, HuSCFDataModule]:
    """The trained model and its datamodule, as Lightning saved them in the checkpoint (the model's networks
    rebuilt from the constructor arguments the checkpoint records)."""
    checkpoint = read_checkpoint(ckpt_path)
    if "datamodule_hyper_parameters" not in checkpoint:
        raise ConfigError(
            f"The checkpoint {ckpt_path} does not record its datamodule (it was trained without a HuSCFDataModule, "
            "or by an older version), so its domains' test sets are unknown; evaluate with the library instead "
            "(huscf_lightning.metrics.evaluate_utility)."
        )
    networks = checkpoint["huscf"].get("networks") or {}
    built = {name: _build_network(networks.get(name), name, ckpt_path) for name in ("generator", "discriminator")}
    try:
        model = HuSCFGAN.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=False, **built)
    except RuntimeError as err:  # weights that do not fit the networks rebuilt
        raise ConfigError(
            f"The checkpoint {ckpt_path} holds networks the evaluate command cannot rebuild ({err}). For a run with "
            "your own networks build HuSCFGAN with them and call huscf_lightning.metrics.evaluate_utility from Python."
        ) from err
    datamodule = HuSCFDataModule.load_from_checkpoint(ckpt_path, weights_only=False)
    datamodule.setup("fit")
    return model, datamodule


def _build_network(spec: dict | None, name: str, ckpt_path: str) -> BlockNetwork:
    """The network a checkpoint's ``networks`` entry describes (class path and constructor arguments)."""
    if spec is None:
        raise ConfigError(
            f"The checkpoint {ckpt_path} does not say how its {name} was built (its class records no init_args), so "
            "the evaluate command cannot rebuild it; build HuSCFGAN with your networks and call "
            "huscf_lightning.metrics.evaluate_utility from Python."
        )
    module_name, _, class_name = spec["class_path"].rpartition(".")
    network_class = getattr(importlib.import_module(module_name), class_name)
    return network_class(**spec["init_args"])
