"""Train a short seeded fit on the CPU and save (or compare) every weight, buffer and optimiser state.

A refactor that must not change behaviour is checked with it: run `--save before.pt` on the old code,
`--compare before.pt` on the new; every tensor must be equal to the bit.

    python bench/fit_fingerprint.py --save /tmp/before.pt [fit overrides...]
    python bench/fit_fingerprint.py --compare /tmp/before.pt [fit overrides...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from huscf_lightning.cli import run_cli

TINY = str(Path(__file__).resolve().parents[1] / "tests" / "configs" / "tiny.yaml")
QUIET = ["--model.evaluation.metrics=[]", "--model.evaluation.utility_samples=0", "--model.evaluation.sample_grids=false"]


def fingerprint(overrides: list[str]) -> dict[str, torch.Tensor]:
    """The G and D weights and buffers and both optimisers' states after a tiny seeded fit."""
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cli = run_cli(["fit", "--config", TINY, *QUIET, f"--trainer.logger.init_args.tracking_uri={uri}",
                       f"--trainer.default_root_dir={tmp}", *overrides])
    model = cli.model
    state = {f"G.{k}": v for k, v in model.G.state_dict().items()} | {f"D.{k}": v for k, v in model.D.state_dict().items()}
    for name, opt in zip(("opt_g", "opt_d"), cli.trainer.optimizers):
        for index, per_param in opt.state_dict()["state"].items():
            for key, value in per_param.items():
                state[f"{name}.{index}.{key}"] = torch.as_tensor(value)
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save")
    group.add_argument("--compare")
    args, overrides = parser.parse_known_args()
    state = fingerprint(overrides)
    if args.save:
        torch.save(state, args.save)
        print(f"saved {len(state)} tensors to {args.save}")
        return 0
    before = torch.load(args.compare)
    differ = [k for k in before if k not in state or not torch.equal(before[k], state[k])]
    extra = sorted(set(state) - set(before))
    print(f"{len(before)} tensors compared: {len(differ)} differ, {len(extra)} new")
    for key in differ[:20] + extra[:20]:
        print("  ", key)
    return 1 if differ or extra else 0


if __name__ == "__main__":
    sys.exit(main())
