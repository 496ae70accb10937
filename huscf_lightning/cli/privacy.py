"""``privacy``: the server's attacks on a trained run, from its checkpoint, logged into the run's MLflow record.

``python -m huscf_lightning privacy --ckpt_path runs/.../last.ckpt`` reconstructs every client's real images from
what the server received (optimisation-based inversion with the head weights the server saw, and a decoder it
trains on data it could hold), reads the clients' labels with probes, and does the same against the run's
networks at initialisation; it prints the table and logs ``privacy/*`` metrics and ``privacy/attacks.json`` to
the MLflow run the checkpoint names.
"""

from __future__ import annotations

import argparse
import sys

from huscf_lightning.engine.saved_run import load_run
from huscf_lightning.privacy.attacks.record import attack_run, leakage_destination, leakage_markdown, log_leakage_to


def _at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``privacy`` command."""
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of a huscf_lightning run (e.g. last.ckpt)")
    parser.add_argument("--batch_size", type=_at_least(2), default=64, help="real images attacked per client (default 64)")
    parser.add_argument("--clients_per_domain", type=_at_least(1), default=None,
                        help="attack the first N clients of each domain (default: every client)")
    parser.add_argument("--inversion_steps", type=_at_least(1), default=500, help="Adam steps of the inversion (500)")
    parser.add_argument("--decoder_epochs", type=_at_least(1), default=15, help="epochs of the server's decoder (15)")
    parser.add_argument("--public", default="test_split",
                        help="the server's own labelled data: the attacked domain's test split (default), or a domain name")
    parser.add_argument("--skip_initialisation", action="store_true", help="do not attack the untrained networks too")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attacks")
    parser.add_argument("--tracking_uri", default="sqlite:///mlflow.db",
                        help="the MLflow store of the run (default sqlite:///mlflow.db, the default job's)")
    parser.add_argument("--no_log", action="store_true", help="print the results only; log nothing to MLflow")


def run(args: argparse.Namespace) -> int:
    """Attack the checkpoint's run, print the table, log it to the run's MLflow record."""
    model, datamodule = load_run(args.ckpt_path)
    run_id = model.resumed_from_run
    destination = None if args.no_log else leakage_destination(args.tracking_uri, run_id, args.ckpt_path)
    settings = {
        "batch_size": args.batch_size, "seed": args.seed, "clients_per_domain": args.clients_per_domain,
        "at_initialisation": not args.skip_initialisation, "inversion": {"steps": args.inversion_steps},
        "decoder": {"epochs": args.decoder_epochs}, "public": args.public,
    }
    report = attack_run(model, datamodule, settings)
    sys.stdout.write(leakage_markdown(report) + "\n")
    if destination is not None:
        log_leakage_to(destination, run_id, report)
        sys.stdout.write(f"logged privacy/* metrics and privacy/attacks.json to MLflow run {run_id} at {args.tracking_uri}\n")
    return 0
