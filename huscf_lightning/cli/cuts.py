"""The ``cuts`` command: pick every client's cut points for a set of device profiles and show why.

``python -m huscf_lightning cuts --profiles configs/profiles/paper.yaml --clients 80`` prints one
row per device type (clients, the cuts they take, how busy they keep it) and the modeled iteration
latency with its breakdown; ``--json`` prints the same as JSON, plus the per-block FLOPs and bytes
used, so anyone can recompute the latency.
"""

from __future__ import annotations

import argparse
import json
import sys

from huscf_lightning.config import PlanSpec
from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split.selection import CutSelection, GanNetworks, select_cuts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``cuts`` command."""
    parser.add_argument("--profiles", default="paper", help="profile YAML file, or 'paper' (packaged)")
    parser.add_argument("--clients", type=int, default=80, help="number of clients (default 80)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the profile assignment and the GA")
    parser.add_argument(
        "--assignment",
        default=None,
        help="comma-separated device name per client (default: even, seeded remainder)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="batch size per client (default 64)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--exact", action="store_true", help="exact optimum (enumeration or MILP) instead of the GA")
    parser.add_argument("--generations", type=int, default=None, help="GA generations (default 1000)")
    parser.add_argument("--population", type=int, default=None, help="GA population (default 1000)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a GA progress bar (one tick a generation) on stderr; default: when stderr is a terminal",
    )
    parser.add_argument(
        "--shared-d-block",
        action="store_true",
        help="only D cuts that keep one block common to all clients on the server (needed by clustered aggregation)",
    )


def _cut_text(cut: list[int]) -> str:
    return f"G({cut[0]},{cut[1]}) D({cut[2]},{cut[3]})"


def format_table(selection: CutSelection) -> str:
    """The human-readable report: per profile, then the latency breakdown."""
    lines = [f"{'profile':<10}{'clients':>8}  {'busy s':>9}{'share':>8}  cuts (G(head,tail) D(head,tail) x clients)"]
    for row in selection.per_profile():
        cuts = ", ".join(f"{_cut_text(c['cut'])} x{c['clients']}" for c in row["cuts"])
        lines.append(f"{row['profile']:<10}{row['clients']:>8}  {row['busy_s']:>9.4f}{row['share']:>8.1%}  {cuts}")
    lines.append("")
    lines.append(f"{'phase':<12}{'x':>3}{'client s':>11}{'upload s':>11}{'server s':>11}{'download s':>12}{'total s':>10}")
    for phase, parts in selection.breakdown.items():
        if phase == "iteration_s":
            continue
        lines.append(
            f"{phase:<12}{parts['times_per_iteration']:>3}{parts['client_compute']:>11.4f}{parts['upload']:>11.4f}"
            f"{parts['server_compute']:>11.4f}{parts['download']:>12.4f}{parts['seconds']:>10.4f}"
        )
    lines.append("")
    lines.append(f"modeled iteration latency: {selection.latency_s:.4f} s ({selection.method})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the command on parsed arguments; prints to stdout and returns the exit code."""
    ga = {}
    if args.generations is not None:
        ga["generations"] = args.generations
    if args.population is not None:
        ga["population"] = args.population
    spec = PlanSpec(
        source="exact" if args.exact else "ga",
        profiles=args.profiles,
        assignment=args.assignment.split(",") if args.assignment else None,
        ga=ga,
    )
    selection = select_cuts(
        args.clients,
        GanNetworks(ReferenceGenerator(), ReferenceDiscriminator(), batch_size=args.batch_size),
        spec,
        seed=args.seed,
        shared_d_block=args.shared_d_block,
        progress_bar=sys.stderr.isatty() if args.progress is None else args.progress,
    )
    if args.json:
        sys.stdout.write(json.dumps(selection.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(format_table(selection) + "\n")
    return 0
