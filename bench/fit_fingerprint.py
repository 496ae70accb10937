"""Train short seeded fits on the CPU and save (or compare) every weight, buffer and optimiser state.

A refactor that must not change behaviour is checked with it: run `--save DIR` on the old code,
`--compare DIR` on the new; every tensor of every job must be equal to the bit.

    python bench/fit_fingerprint.py --save /tmp/before            # every job of JOBS
    python bench/fit_fingerprint.py --compare /tmp/before
    python bench/fit_fingerprint.py --save /tmp/before --jobs fedavg md_gan [fit overrides...]

The jobs: the default job (configs/default.yaml, 3 rounds), the tiny test config with each federation
mode and baseline, with partial participation, and with exact and GA cut selection.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from huscf_lightning.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "configs" / "tiny.yaml")
DEFAULT = str(ROOT / "configs" / "default.yaml")
QUIET = ["--model.evaluation.metrics=[]", "--model.evaluation.utility_samples=0", "--model.evaluation.sample_grids=false"]

JOBS: dict[str, list[str]] = {
    "default_job": ["--config", DEFAULT, "--model.rounds=3", "--data.cap=256"],
    "kld_clustered": ["--config", TINY],
    "fedavg": ["--config", TINY, "--model.federation.mode=fedavg"],
    "clustered": ["--config", TINY, "--model.federation.mode=clustered"],
    "fedgan": ["--config", TINY, "--model.federation.mode=fedgan"],
    "local": ["--config", TINY, "--model.federation.mode=local"],
    "md_gan": ["--config", TINY, "--model.federation.mode=md_gan"],
    "centralized": ["--config", TINY, "--model.federation.mode=centralized"],
    "participation": ["--config", TINY, "--model.federation.mode=fedavg", "--model.federation.participation=0.5"],
    "exact_plan": ["--config", TINY, "--model.plan.source=exact"],
    "ga_plan": ["--config", TINY, "--model.plan.source=ga", "--model.plan.ga={population: 16, generations: 3, elite: 2}"],
}


def fingerprint(job: list[str]) -> dict[str, torch.Tensor]:
    """The G and D weights and buffers and both optimisers' states after a short seeded fit."""
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cli = run_cli(["fit", *job, *QUIET, f"--trainer.logger.init_args.tracking_uri={uri}",
                       f"--trainer.default_root_dir={tmp}", "--trainer.enable_progress_bar=false"])
    model = cli.model
    state = {f"G.{k}": v for k, v in model.G.state_dict().items()} | {f"D.{k}": v for k, v in model.D.state_dict().items()}
    for name, opt in zip(("opt_g", "opt_d"), cli.trainer.optimizers):
        for index, per_param in opt.state_dict()["state"].items():
            for key, value in per_param.items():
                state[f"{name}.{index}.{key}"] = torch.as_tensor(value)
    return state


def compare(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """The keys whose tensors differ (or are missing after), and the keys that are new."""
    differ = [k for k in before if k not in after or not torch.equal(before[k], after[k])]
    return differ, sorted(set(after) - set(before))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", help="folder to write one <job>.pt per job into")
    group.add_argument("--compare", help="folder a --save run wrote")
    parser.add_argument("--jobs", nargs="+", choices=list(JOBS), default=list(JOBS))
    args, overrides = parser.parse_known_args()
    folder = Path(args.save or args.compare)
    failed = 0
    for job in args.jobs:
        state = fingerprint(JOBS[job] + overrides)
        if args.save:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(state, folder / f"{job}.pt")
            print(f"{job}: saved {len(state)} tensors")
            continue
        differ, extra = compare(torch.load(folder / f"{job}.pt"), state)
        print(f"{job}: {len(state)} tensors compared: {len(differ)} differ, {len(extra)} new")
        for key in differ[:20] + extra[:20]:
            print("  ", key)
        failed += bool(differ or extra)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
