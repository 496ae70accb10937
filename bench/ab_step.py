"""Paired step times of two source trees of this project (one commit against another), step by step.

On a shared CPU a step's time drifts by 10% within minutes, more than most changes move it, so two
runs one after the other cannot tell a 2% change from the machine. Here two worker processes, one per
source tree, each fit `step_time.py`'s workload, and they take turns: one step of A while B waits,
then one of B (the order swapped every step). Both see the machine as it is within seconds of each
other; the figure is the median of the per-step ratios B/A.

    git worktree add /tmp/before 4d46ce8            # the commit to compare against
    .venv/bin/python bench/ab_step.py /tmp/before . --clients 8 --batch 32 --steps 40

Each worker imports the package from its own tree (the packages and directories named in that tree's
pyproject.toml), with this environment's dependencies; the workload is this checkout's `step_time.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def _import_from(tree: Path) -> None:
    """Make ``huscf_lightning`` and its subpackages come from ``tree``, those that pyproject.toml's
    ``[tool.setuptools.package-dir]`` places elsewhere (``"huscf_lightning.callbacks" = "callbacks"``) included."""
    import importlib.abc
    import importlib.util

    pyproject = (tree / "pyproject.toml").read_text()
    mapped = re.findall(r'^"(huscf_lightning[\w.]*)" = "([\w/]+)"$', pyproject, re.MULTILINE)
    places = {"huscf_lightning": tree / "huscf_lightning"} | {name: tree / folder for name, folder in mapped}

    class TreeFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname not in places:
                return None
            folder = places[fullname]
            return importlib.util.spec_from_file_location(
                fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )

    sys.meta_path.insert(0, TreeFinder())


def worker(tree: Path, turns_in: int, turns_out: int, args: argparse.Namespace) -> None:
    """One fit of the workload that waits for its turn before each step and says when the step is done."""
    _import_from(tree)
    sys.path.insert(0, str(BENCH))
    import lightning.pytorch as pl
    from step_time import huscf_step_times

    go, done = os.fdopen(turns_in, "r"), os.fdopen(turns_out, "w")

    class Turns(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            go.readline()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            done.write("done\n")
            done.flush()
            if batch_idx == args.steps - 1:  # wait: ending the fit now would slow the other side's last step
                go.readline()

    times = huscf_step_times(args.clients, args.steps, args.batch, "cpu", callbacks=[Turns()])
    done.write(json.dumps(times) + "\n")
    done.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree_a", type=Path, help="source tree A (the baseline: e.g. a worktree of an older commit)")
    parser.add_argument("tree_b", type=Path, help="source tree B (e.g. this checkout, '.')")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), int(args.worker[1]), int(args.worker[2]), args)
        return
    trees = {"A": args.tree_a.resolve(), "B": args.tree_b.resolve()}
    for tree in trees.values():
        if not (tree / "pyproject.toml").is_file():
            parser.error(f"{tree} is not a source tree of this project (no pyproject.toml); give a checkout or a "
                         "worktree of it.")
    workers, channels = {}, {}
    for side, tree in trees.items():
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        command = [sys.executable, __file__, str(tree), str(tree), "--clients", str(args.clients), "--batch",
                   str(args.batch), "--steps", str(args.steps), "--worker", str(tree), str(go_r), str(done_w)]
        workers[side] = subprocess.Popen(command, pass_fds=(go_r, done_w), stdout=subprocess.DEVNULL)
        os.close(go_r)
        os.close(done_w)
        channels[side] = (os.fdopen(go_w, "w"), os.fdopen(done_r, "r"))
    for step in range(args.steps):
        for side in ("A", "B") if step % 2 == 0 else ("B", "A"):
            go, done = channels[side]
            try:
                go.write("go\n")
                go.flush()
                stepped = done.readline() == "done\n"
            except BrokenPipeError:
                stepped = False
            if not stepped:
                for process in workers.values():  # the other would go on stepping alone once our pipes close
                    process.kill()
                    process.wait()
                sys.exit(f"The worker of {trees[side]} stopped before step {step}; its error is printed above.")
    for go, _ in channels.values():
        go.write("finish\n")
        go.flush()
    times = {side: json.loads(channels[side][1].readline()) for side in trees}
    for process in workers.values():
        process.wait()
    ratios = [b / a for a, b in zip(times["A"], times["B"])]
    print(f"clients={args.clients} batch={args.batch} paired steps={len(ratios)}")
    for side, tree in trees.items():
        print(f"{side} {tree}: median step {statistics.median(times[side]):.3f} s")
    faster = sum(r < 1 for r in ratios)
    print(f"B/A per step: median {statistics.median(ratios):.3f}, B faster in {faster} of {len(ratios)}")


if __name__ == "__main__":
    main()
