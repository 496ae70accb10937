"""Steps per second of a fit with its clients sharded over 1, 2, ... processes, and the scaling efficiency.

Each configuration is a real command-line fit (``--trainer.strategy=ddp`` above one process; Lightning's
launcher starts the ranks) of the paper's networks on ``mnist5k``, one round of one local epoch, with
nothing evaluated. The step time is the median interval between consecutive steps' ``train/loss_d``
records in the fit's own MLflow store (rank 0 logs one per step), so process start-up, the plan and the
round end are not in it. Efficiency = (steps/s on N processes) / (N x steps/s on one).

    .venv/bin/python bench/ddp_scaling.py --clients 8 20 --processes 1 2
    .venv/bin/python bench/ddp_scaling.py --clients 8 20 --processes 1 2 --threads 1   # one core per process
    python bench/ddp_scaling.py --clients 80 --processes 1 --accelerator gpu   # the strategy's cost on one GPU
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

QUIET = ["--model.evaluation.metrics=[]", "--model.evaluation.utility_samples=0", "--model.evaluation.sample_grids=false"]


def step_seconds(
    clients: int, processes: int, steps: int, batch: int, accelerator: str, strategy: bool, threads: int | None
) -> float:
    """Median seconds per training step of one fit (``strategy``: through the sharding strategy even on one
    process, to measure its own cost; ``threads``: torch threads per process, else PyTorch's and Lightning's
    defaults: all cores for one process, an equal share each for several)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            sys.executable, "-m", "huscf_lightning", "fit", *QUIET,
            f"--trainer.logger.init_args.tracking_uri=sqlite:///{tmp}/mlflow.db", f"--trainer.default_root_dir={tmp}",
            "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
            f"--trainer.accelerator={accelerator}", f"--trainer.devices={processes}",
            "--model.generator.init_args.width=1.0", "--model.discriminator.init_args.width=1.0",
            "--model.rounds=1", "--model.local_epochs=1", "--model.federation.warmup_rounds=1",
            f"--data.domains=[{{name: mnist5k, clients: {clients}}}]", f"--data.batch_size={batch}",
            f"--data.cap={batch * steps}",
        ]
        if processes > 1 or strategy:
            args.append("--trainer.strategy=ddp")
        env = {**os.environ, "PYTHONWARNINGS": "ignore"} | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
        done = subprocess.run(args, cwd=tmp, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"the fit failed ({' '.join(args)}):\n{done.stderr[-3000:]}")
        with sqlite3.connect(Path(tmp) / "mlflow.db") as db:
            stamps = [row[0] for row in db.execute("SELECT timestamp FROM metrics WHERE key='train/loss_d' ORDER BY step")]
    intervals = [(b - a) / 1000 for a, b in zip(stamps[1:], stamps[2:])]  # the first step warms up
    if not intervals:
        raise SystemExit(f"{len(stamps)} steps logged: raise --steps")
    return statistics.median(intervals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=8, help="steps in the epoch (per client: batch x steps samples)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes)")
    parser.add_argument("--strategy-on-one", action="store_true", help="also time one process through the strategy")
    args = parser.parse_args()
    print("clients  processes  s/step  steps/s  speed-up  efficiency")
    for clients in args.clients:
        base = None
        runs = [(n, False) for n in args.processes] + ([(1, True)] if args.strategy_on_one else [])
        for processes, through in runs:
            seconds = step_seconds(clients, processes, args.steps, args.batch, args.accelerator, through, args.threads)
            base = seconds if base is None else base
            speedup = base / seconds
            label = f"{processes}{' (ddp)' if through else ''}"
            print(f"{clients:>7}  {label:>9}  {seconds:6.3f}  {1 / seconds:7.2f}  {speedup:8.2f}  {speedup / processes:10.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
