"""`bench/ab_step.py`: each worker runs its own tree's package, the two take turns, bad trees are refused."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AB_STEP = ROOT / "bench" / "ab_step.py"


def _copy_tree(target: Path) -> Path:
    """The package's sources as a second source tree (what a worktree of another commit would be)."""
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("huscf_lightning", "configs"):
        shutil.copytree(ROOT / folder, target / folder, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def test_a_worker_imports_the_package_and_its_mapped_folders_from_its_tree(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "other")
    code = (
        f"import sys; from pathlib import Path; sys.path.insert(0, {str(AB_STEP.parent)!r}); "
        f"from ab_step import _import_from; _import_from(Path({str(tree)!r})); "
        "import huscf_lightning.callbacks as c, huscf_lightning.configs as k, huscf_lightning.split.network as n; "
        "print(c.__file__); print(k.__file__); print(n.__file__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    files = [Path(line) for line in done.stdout.split()]
    expected = ["huscf_lightning/callbacks/__init__.py", "configs/__init__.py", "huscf_lightning/split/network.py"]
    assert files == [tree / name for name in expected]


def test_a_folder_that_is_not_a_source_tree_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(AB_STEP), str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "is not a source tree of this project" in done.stderr and str(tmp_path) in done.stderr


@pytest.mark.slow
def test_two_trees_take_turns_for_every_step(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "other")
    done = subprocess.run(
        [sys.executable, str(AB_STEP), str(tree), str(ROOT), "--clients", "2", "--batch", "4", "--steps", "4"],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "paired steps=3" in done.stdout  # the first step of each fit (set-up) is left out
    assert f"A {tree}: median step" in done.stdout and f"B {ROOT}: median step" in done.stdout
    faster = re.search(r"B/A per step: median (\d+\.\d+), B faster in (\d) of 3", done.stdout)
    assert faster is not None and float(faster.group(1)) > 0, done.stdout


def test_a_worker_that_fails_stops_the_comparison_and_the_other_worker(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "broken")
    (tree / "huscf_lightning" / "__init__.py").write_text('raise ImportError("broken on purpose")\n')
    marker = "7331"  # a step count no other run uses: it finds this run's workers among the processes
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:  # a file, not a pipe: a worker left behind would keep a pipe open, and wait
        done = subprocess.run([sys.executable, str(AB_STEP), str(tree), str(ROOT), "--steps", marker],
                              stdout=subprocess.DEVNULL, stderr=stderr, timeout=600)
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if marker in _reads(p) and "--worker" in _reads(p)]
    assert not left, [_reads(p) for p in left]
    assert done.returncode == 1
    message = errors.read_text()
    assert "broken on purpose" in message and f"The worker of {tree} stopped before step 0" in message


def _reads(path: Path) -> str:
    """A process's command line, or nothing when it has gone meanwhile."""
    try:
        return path.read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
