"""A fit that is killed, interrupted, given bad input or started twice at once: what it leaves behind.

Real parts only: a real SQLite MLflow store holding a finished run, real subprocesses and signals.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from huscf_lightning.__main__ import main
from huscf_lightning.cli.lightning_cli import run_cli
from huscf_lightning.engine.checkpoints import AtomicCheckpointIO
from huscf_lightning.split import SplitPlan

TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")
QUIET = [
    "--model.evaluation.metrics=[]",
    "--model.evaluation.utility_samples=0",
    "--model.evaluation.sample_grids=false",
    "--trainer.deterministic=true",
]


def _store_with_one_finished_run(folder: Path) -> str:
    """A SQLite store in ``folder`` with experiment ``tests`` holding one FINISHED run; its URI."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("tests"))
    client.set_terminated(run.info.run_id, "FINISHED")
    return uri


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tests")
    return client.search_runs([experiment.experiment_id]) if experiment else []


# ------------------------------------------------------------------------------------------ atomic write
class _FailsHalfway:
    """Pickling it raises: torch.save has already streamed the tensors before it into the file."""

    def __reduce__(self):
        raise RuntimeError("disk full")


def test_a_checkpoint_write_that_breaks_halfway_leaves_the_previous_one_whole(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"round": 1, "weights": torch.arange(10.0)}, target)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"round": 2, "weights": torch.randn(200_000), "broken": _FailsHalfway()}, target)
    previous = torch.load(target, weights_only=False)
    assert previous["round"] == 1 and torch.equal(previous["weights"], torch.arange(10.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left behind


# ----------------------------------------------------------------------------------- bad input, no run
def _checkpoint_with(tmp_path: Path, plan: SplitPlan, sizes: list[int]) -> str:
    path = tmp_path / "other.ckpt"
    torch.save({"huscf": {"plan": plan.to_dict(), "client_domains": ["mnist5k"] * 2 + ["glyphs"] * 2,
                          "client_sizes": sizes}}, path)
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.domains=[{name: mnist9k, clients: 2}]"], ("Unknown domain 'mnist9k'", "register_domain")),
        (["--model.plan.source=uniform", "--model.plan.cut=[2,3,1,1]"], ("head + tail <= 4", "Valid (head, tail) pairs")),
        (["--data.domains=[{name: fashion_mnist, clients: 2, root: /nonexistent/fmnist}]"], ("/nonexistent/fmnist", "root:")),
        (["--model.federation.k=9"], ("federation.k = 9", "between 1 and 4")),
        (["--model.plan.source=explicit", "--model.plan.cuts=[[1,1,1,1]]"], "explicit"),
        (["--model.plan.source=explicit", "--model.plan.cuts=[[1,1,1,3],[1,1,3,1],[1,1,1,3],[1,1,3,1]]",
          "--model.federation.mode=clustered"], ("share none", "federation.mode=fedavg")),
        (["--model.num_classes=5"], "--model.num_classes=10"),
        (["--model.lr_d=-0.001"], ("model.lr_d is -0.001", "finite number > 0", "--model.lr_d=2e-4")),
        (["--model.lr_g=.nan"], ("model.lr_g is nan", "finite number > 0")),
        (["--model.lr_g=.inf"], ("model.lr_g is inf", "finite number > 0")),
        (["--model.betas=[1.5,0.999]"], ("model.betas is [1.5, 0.999]", "in [0, 1)")),
        ("OTHER_PLAN", ("another split plan", "plan.json")),
        ("OTHER_CLIENTS", ("was trained on 4 clients", "data section")),
        ("BROKEN_YAML", ("broken.yaml is not valid YAML", "at line 4, column 7", "flow sequence that starts at line 3")),
    ],
)
def test_bad_input_is_one_paragraph_and_adds_no_run_to_the_store(
    tmp_path: Path, monkeypatch, capsys, args: list[str] | str, message: str | tuple
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = _store_with_one_finished_run(tmp_path)
    if args == "OTHER_PLAN":
        args = ["--model.plan.source=uniform", f"--ckpt_path={_checkpoint_with(tmp_path, SplitPlan.uniform([2, 2, 2, 2], 4, 5, 5), [16] * 4)}"]
    elif args == "OTHER_CLIENTS":
        args = [f"--ckpt_path={_checkpoint_with(tmp_path, SplitPlan.uniform([1, 1, 1, 1], 4, 5, 5), [10] * 4)}"]
    elif args == "BROKEN_YAML":
        (tmp_path / "broken.yaml").write_text("model:\n  rounds: 2\n  lr_g: [0.1\n  lr_d: 1\n")
        args = ["--config", str(tmp_path / "broken.yaml")]
    code = main(["fit", "--config", TINY, f"--trainer.logger.init_args.tracking_uri={uri}", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    for part in (message,) if isinstance(message, str) else message:
        assert part in err, part
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]  # the store fixture's own MLflow log lines come first
    assert lines[-1].startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1, err
    (run,) = _runs(uri)  # the finished run only: nothing was created, nothing was marked FAILED
    assert run.info.status == "FINISHED"


# ------------------------------------------------------------------------------ kill, interrupt, resume
def _fit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "huscf_lightning", "fit", "--config", TINY, *QUIET, *args]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of a 3-round tiny fit that nobody stopped."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    cli = run_cli(["fit", "--config", TINY, *QUIET, "--trainer.logger=false", f"--trainer.default_root_dir={folder}"])
    return {k: v.clone() for k, v in cli.model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_fit_stopped_after_round_1_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, monkeypatch, uninterrupted: dict, sig: signal.Signals
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = f"--trainer.logger.init_args.tracking_uri={uri}"
    # Ctrl-C's default action in the fit, even where this test runs in a shell's background job (SIGINT ignored)
    process = subprocess.Popen(_fit_command(tracked), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 400
    while not list(tmp_path.glob("runs/*/*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, "the fit ended before writing a round checkpoint"
        time.sleep(0.05)
    process.send_signal(sig)
    output, _ = process.communicate(timeout=300)
    (checkpoint,) = tmp_path.glob("runs/*/*/checkpoints/last.ckpt")
    stopped_at = torch.load(checkpoint, weights_only=False)["epoch"]
    assert stopped_at < 2, "the run was not stopped before its last round"
    (killed,) = _runs(uri)
    if sig == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL and killed.info.status == "RUNNING"
    else:
        assert process.returncode == 130, output
        assert killed.info.status == "KILLED" and "marked KILLED" in output and "--ckpt_path last" in output

    resumed = run_cli(["fit", "--config", TINY, *QUIET, tracked, "--ckpt_path=last"])
    for key, value in uninterrupted.items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    client = MlflowClient(uri)
    before = client.get_run(killed.info.run_id)
    after = client.get_run(resumed.trainer.logger.run_id)
    assert before.info.status == RunStatus.to_string(RunStatus.KILLED)
    assert after.info.status == "FINISHED" and after.data.tags["resumed_from_run"] == killed.info.run_id
    if sig == signal.SIGKILL:  # marked KILLED when its checkpoint was resumed
        assert before.data.tags["resumed_by_run"] == after.info.run_id


# ------------------------------------------------------------------------------------- shared store
@pytest.mark.slow
def test_two_fits_started_together_in_a_fresh_folder_both_finish(tmp_path: Path) -> None:
    command = _fit_command("--model.rounds=1", "--trainer.logger.init_args.tracking_uri=sqlite:///mlflow.db")
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=590)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
        assert "Traceback" not in output
    runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert runs[0].info.run_name != runs[1].info.run_name or runs[0].info.run_id != runs[1].info.run_id


@pytest.mark.slow
def test_a_store_in_a_read_only_folder_is_a_clear_error_at_once(tmp_path: Path) -> None:
    """A real read-only folder (a read-only bind mount in a private mount namespace): fit stops at once."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], check=False).returncode != 0:
        pytest.skip("needs `unshare -m` (a private mount namespace) to make a read-only folder")
    folder = tmp_path / "ro"
    folder.mkdir()
    uri = _store_with_one_finished_run(folder)
    fit = " ".join(_fit_command("--trainer.logger.init_args.tracking_uri=sqlite:///mlflow.db"))
    script = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && cd {folder} && exec {fit}"
    started = time.monotonic()
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "cannot be written" in done.stderr and "Read-only file system" in done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 120  # no 100 s of retries
    (run,) = _runs(uri)
    assert run.info.status == "FINISHED"
