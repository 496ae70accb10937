"""The ``compare`` command: run (or resume) a comparison of methods x scenarios x seeds from a spec.

``python -m huscf_lightning compare --config configs/compare/smoke.yaml`` prints one line per cell
and, at the end, the table in Markdown; every cell is a child run of the comparison's MLflow run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from huscf_lightning.compare import CellOutcome, load_compare, run_comparison


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``compare`` command."""
    parser.add_argument("--config", required=True, help="comparison spec YAML, e.g. configs/compare/smoke.yaml")
    parser.add_argument("--name", default=None, help="comparison name (default: the spec's); an existing one resumes")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the fit config's logger)")


def cell_line(outcome: CellOutcome, index: int, total: int) -> str:
    """One progress line for a finished (or skipped, or failed) cell."""
    head = f"[{index}/{total}] {outcome.cell.label}:"
    if outcome.state == "skipped":
        return f"{head} skipped, finished earlier (run {outcome.run_id})"
    if outcome.state == "failed":
        return f"{head} FAILED in {outcome.seconds:.0f} s (run {outcome.run_id}): {(outcome.error or '')[:200]}"
    return f"{head} finished in {outcome.seconds:.0f} s (run {outcome.run_id})"


def run(args: argparse.Namespace) -> int:
    """Run the command on parsed arguments; prints progress and the table, returns the exit code (1 if a cell failed)."""
    spec = load_compare(args.config)
    spec = dataclasses.replace(
        spec, name=args.name or spec.name, tracking_uri=args.tracking_uri or spec.tracking_uri
    )
    started = time.perf_counter()

    def progress(outcome: CellOutcome, index: int, total: int) -> None:
        sys.stdout.write(cell_line(outcome, index, total) + "\n")
        sys.stdout.flush()

    result = run_comparison(spec, on_cell=progress)
    sys.stdout.write(f"\nComparison {spec.name!r}" + (f" (gains of {spec.ours} over each other method)" if spec.ours else "") + ":\n\n")
    sys.stdout.write(result.markdown)
    sys.stdout.write(
        f"\n{len(result.outcomes) - len(result.failed)} of {len(result.outcomes)} cells finished; "
        f"{time.perf_counter() - started:.0f} s wall this session.\n"
        f"MLflow comparison run {result.parent_run_id} in experiment {result.experiment_name!r} at {result.tracking_uri}\n"
        f"See it with: mlflow ui --backend-store-uri {result.tracking_uri}\n"
    )
    if result.failed:
        sys.stdout.write(
            f"{len(result.failed)} cell(s) failed; run the same command again to rerun them (finished cells are skipped).\n"
        )
        return 1
    return 0
