"""``evaluate``: the utility test of a saved run (generated data trains a CNN, tested on real data), from its checkpoint alone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huscf_lightning.engine.saved_run import load_run
from huscf_lightning.metrics.utility_report import evaluate_utility, format_utility_table, utility_csv


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


def run(args: argparse.Namespace) -> int:
    """Print the utility table of the checkpoint's generators (one row per domain)."""
    model, datamodule = load_run(args.ckpt_path)
    rows = evaluate_utility(model, datamodule.domain_data, num_samples=args.samples, epochs=args.epochs, seed=args.seed)
    sys.stdout.write(format_utility_table(rows) + "\n")
    if args.csv:
        Path(args.csv).write_text(utility_csv(rows))
    return 0
