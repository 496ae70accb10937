"""Parallel sweeps: worker processes and commands started by hand fill one study with the trials asked for, once,
under one MLflow sweep run; a worker that dies is reported and its trial failed; bad input is a clear error."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState

from huscf_lightning.__main__ import main
from huscf_lightning.cli import sweep as sweep_command
from huscf_lightning.sweep.locks import StudyLocks
from huscf_lightning.sweep.storage import open_storage, storage_key

ALPHA = {"model.federation.alpha": {"type": "float", "low": 0.1, "high": 5.0, "log": True}}


@pytest.fixture(scope="module")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The quickest fit a latency objective can score: 4 clients, 1 round of 2 steps, no evaluation."""
    folder = tmp_path_factory.mktemp("sweep_workers_base")
    config = {
        "trainer": {
            "logger": {
                "class_path": "lightning.pytorch.loggers.MLFlowLogger",
                "init_args": {"experiment_name": "sweep-tests", "tracking_uri": "sqlite:///unused.db"},
            },
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "model": {
            "rounds": 1,
            "local_epochs": 1,
            "federation": {"warmup_rounds": 1},
            "evaluation": {"metrics": [], "utility_samples": 0, "sample_grids": False},
        },
        "data": {
            "domains": [
                {"name": "digits", "clients": 2},
                {"name": "glyphs", "clients": 2, "options": {"train_per_class": 20, "test_per_class": 10}},
            ],
            "batch_size": 8,
            "cap": 16,
        },
    }
    path = folder / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _spec_file(folder: Path, base_config: str, n_trials: int, storage: str | None = None) -> tuple[str, str, str]:
    """A latency sweep of ``n_trials`` over the KLD temperature; the spec file, its storage and its MLflow store."""
    storage = storage or f"sqlite:///{folder / 'optuna.db'}"
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    spec = {
        "study_name": "parallel", "storage": storage, "tracking_uri": tracking, "base_config": base_config,
        "objectives": ["latency"], "n_trials": n_trials, "search_space": ALPHA,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path), storage, tracking


def _run(config: str, *options: str) -> int:
    """The sweep command in this process."""
    parser = argparse.ArgumentParser()
    sweep_command.add_arguments(parser)
    return sweep_command.run(parser.parse_args([f"--config={config}", *options]))


def _command(config: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "huscf_lightning", "sweep", "--config", config, *options]


def _waiting(path: Path) -> int:
    """How many processes wait for the lock on ``path`` (Linux lists them in /proc/locks, marked '->')."""
    inode = path.stat().st_ino
    entries = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
    return sum(1 for fields in entries if "->" in fields and fields[-3].endswith(f":{inode}"))


def _check_one_sweep_run(tracking: str, study: optuna.Study) -> None:
    """One finished sweep run with the front; one child run per trial, each the trial's own."""
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("sweep-tests").experiment_id])
    (parent,) = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    assert parent.info.run_name == "sweep-parallel" and parent.info.status == "FINISHED"
    assert "pareto_front.json" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert parent.data.metrics["sweep/complete_trials"] + parent.data.metrics["sweep/fail_trials"] == len(study.trials)
    children = [r for r in runs if MLFLOW_PARENT_RUN_ID in r.data.tags]
    assert all(r.data.tags[MLFLOW_PARENT_RUN_ID] == parent.info.run_id for r in children)
    assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in study.trials)
    assert sorted(r.data.tags["sweep.trial"] for r in children) == sorted(str(t.number) for t in study.trials)


def test_two_workers_run_exactly_n_trials_of_one_study_under_one_sweep_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, base_config: str
) -> None:
    monkeypatch.chdir(tmp_path)
    config, storage, tracking = _spec_file(tmp_path, base_config, n_trials=3)
    assert _run(config, "--workers=2") == 0
    printed = capsys.readouterr().out
    assert all(f"[{i}/3] trial " in printed for i in (1, 2, 3)) and "[4/" not in printed

    study = optuna.load_study(study_name="parallel", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({t.params["model.federation.alpha"] for t in study.trials}) == 3  # the workers draw apart (seeded by their first trial)
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert f"{socket.gethostname()}:{os.getpid()}" not in workers  # the trials ran in the worker processes
    _check_one_sweep_run(tracking, study)


def test_the_same_command_started_twice_joins_one_session_and_one_sweep_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_config: str
) -> None:
    """Both commands start while the test holds the study's lock, so they reach it together whatever their
    start-up times: one starts the session, the other joins it."""
    if not Path("/proc/locks").is_file():
        pytest.skip("needs Linux's /proc/locks to see both commands wait for the study's lock")
    config, storage, tracking = _spec_file(tmp_path, base_config, n_trials=3)
    locks = StudyLocks(storage_key(storage), "parallel")
    with locks.claim():
        processes = [
            subprocess.Popen(_command(config), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        deadline = time.monotonic() + 180
        while _waiting(locks.claim_path) < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                for process in processes:
                    process.kill()
                pytest.fail(f"the commands did not both reach the study's lock: {[p.communicate() for p in processes]}")
            time.sleep(0.2)
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    joined = ["joining the sweep other processes run on study 'parallel': trials 0 to 2" in err for _, err in outputs]
    assert sorted(joined) == [False, True], outputs

    study = optuna.load_study(study_name="parallel", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    _check_one_sweep_run(tracking, study)

    # run again once they are done: a new session adds --n-trials more trials under the same sweep run
    monkeypatch.chdir(tmp_path)
    assert _run(config, "--n-trials=1") == 0
    study = optuna.load_study(study_name="parallel", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    _check_one_sweep_run(tracking, study)


def test_a_worker_that_dies_is_reported_its_trial_failed_and_the_others_finish(tmp_path: Path, base_config: str) -> None:
    """Killing a worker mid-trial (journal storage): the command still ends, with the other worker's trials."""
    config, storage, tracking = _spec_file(tmp_path, base_config, n_trials=3, storage=f"journal:{tmp_path / 'optuna.log'}")
    command = subprocess.Popen(
        _command(config, "--workers=2"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline and command.poll() is None:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="parallel", storage=open_storage(storage))
        except KeyError:  # not created yet
            continue
        running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if "mlflow_run_id" in t.user_attrs]
        victim = running[0] if running else None
    assert victim is not None, command.communicate()
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    out, err = command.communicate(timeout=300)

    assert command.returncode == 1, (out, err)
    assert "was killed by signal 9" in err and f"its trial(s) [{victim.number}] are marked FAIL" in err
    study = optuna.load_study(study_name="parallel", storage=open_storage(storage))
    assert [t.number for t in study.trials] == [0, 1, 2]
    states = {t.number: t.state for t in study.trials}
    assert states.pop(victim.number) == TrialState.FAIL and set(states.values()) == {TrialState.COMPLETE}
    assert "killed by signal 9" in study.trials[victim.number].user_attrs["error"]
    assert MlflowClient(tracking).get_run(victim.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    _check_one_sweep_run(tracking, study)


@pytest.mark.parametrize(
    ("options", "spec_storage", "message"),
    [
        (["--workers=0"], "file", "--workers must be a whole number >= 1 (the processes that run trials); got 0."),
        (["--workers=-2"], "file", "got -2"),
        (["--workers=2", "--storage=sqlite:///:memory:"], "file", "the storage 'sqlite:///:memory:' keeps it in one "
         "process's memory. Give a file-backed storage, e.g. --storage sqlite:///optuna.db"),
        (["--workers=3"], None, "but the spec's storage: null keeps it in one process's memory"),
    ],
    ids=["zero", "negative", "in-memory-sqlite", "no-storage"],
)
def test_bad_worker_settings_exit_2_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, base_config: str,
    options: list[str], spec_storage: str | None, message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    config, _, _ = _spec_file(tmp_path, base_config, n_trials=2)
    if spec_storage is None:
        spec = yaml.safe_load(Path(config).read_text())
        Path(config).write_text(yaml.safe_dump({**spec, "storage": None}))
    assert main(["sweep", "--config", config, *options]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()
