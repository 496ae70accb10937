"""``evaluate``: the utility test of a saved run (generated data trains a CNN, tested on real data), from its checkpoint alone."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from huscf_lightning.data import HuSCFDataModule
from huscf_lightning.engine.checkpoints import read_checkpoint
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.errors import ConfigError
from huscf_lightning.metrics.utility_report import evaluate_utility, format_utility_table, utility_csv
from huscf_lightning.nets import BlockNetwork


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``evaluate`` command."""
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of a huscf_lightning run (e.g. last.ckpt)")
    parser.add_argument("--samples", type=_positive_int, default=30000, help="generated samples per domain (default 30000)")
    parser.add_argument("--epochs", type=_positive_int, default=15, help="epochs of the utility CNN (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated samples and the CNN")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")


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


def run(args: argparse.Namespace) -> int:
    """Print the utility table of the checkpoint's generators (one row per domain)."""
    model, datamodule = load_run(args.ckpt_path)
    rows = evaluate_utility(model, datamodule.domain_data, num_samples=args.samples, epochs=args.epochs, seed=args.seed)
    sys.stdout.write(format_utility_table(rows) + "\n")
    if args.csv:
        Path(args.csv).write_text(utility_csv(rows))
    return 0
