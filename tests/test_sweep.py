"""Sweeps: trials land in Optuna and as nested MLflow runs, failures are recorded, bad specs fail before any trial."""

from __future__ import annotations

import argparse
import json
import re
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
from huscf_lightning.config import PlanSpec
from huscf_lightning.engine.tracking import TrackingError
from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split.plan import SplitPlan
from huscf_lightning.split.selection import GanNetworks, plan_latency, select_cuts
from huscf_lightning.sweep import SweepError, load_sweep, prepare, sweep_from_mapping


def _stores(folder: Path) -> tuple[str, str]:
    """Optuna storage and MLflow tracking URIs inside ``folder`` (absolute: MLflow caches stores by URI)."""
    return f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="module")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The smallest useful fit: 4 clients on two quick offline domains, 2 rounds, 100 evaluation samples."""
    folder = tmp_path_factory.mktemp("sweep_base")
    config = {
        "trainer": {
            "logger": {
                "class_path": "lightning.pytorch.loggers.MLFlowLogger",
                "init_args": {"experiment_name": "sweep-tests", "tracking_uri": "sqlite:///unused.db"},
            },
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
        },
        "model": {
            # the paper's networks, not the default job's lighter ones: the latency objective is checked against them
            "generator": {"class_path": "huscf_lightning.nets.ReferenceGenerator", "init_args": {"width": 1.0}},
            "discriminator": {"class_path": "huscf_lightning.nets.ReferenceDiscriminator", "init_args": {"width": 1.0}},
            "rounds": 2,
            "local_epochs": 1,
            "federation": {"warmup_rounds": 1},
            "evaluation": {
                "every_n_rounds": 1,  # pruning reads every round's score
                "num_samples": 100,
                "utility_samples": 0,
                "sample_grids": False,
                "classifier_cache": str(folder / "classifiers"),  # shared by every test here: trained once
            },
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


def _spec_file(folder: Path, base_config: str, **entries) -> str:
    storage, tracking = _stores(folder)
    spec = {"study_name": "demo", "storage": storage, "tracking_uri": tracking, "base_config": base_config, **entries}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _run(config: str, **options) -> int:
    parser = argparse.ArgumentParser()
    sweep_command.add_arguments(parser)
    args = [f"--config={config}"] + [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    return sweep_command.run(parser.parse_args(args))


def _runs(client: MlflowClient) -> list:
    return client.search_runs([client.get_experiment_by_name("sweep-tests").experiment_id])


def test_two_trial_sweep_lands_in_optuna_and_as_nested_mlflow_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, base_config: str
) -> None:
    monkeypatch.chdir(tmp_path)
    storage, tracking = _stores(tmp_path)
    config = _spec_file(
        tmp_path,
        base_config,
        objectives=["fid", "latency"],
        n_trials=2,
        sampler={"population_size": 2},
        fixed={"model.plan.ga.population": 12},
        search_space={
            "model.federation.alpha": {"type": "float", "low": 0.1, "high": 5.0, "log": True},
            "model.plan.source": {"type": "categorical", "choices": ["random", "ga"]},
            "model.plan.ga.generations": {"type": "int", "low": 2, "high": 4, "when": {"model.plan.source": "ga"}},
        },
    )
    assert _run(config) == 0
    printed = capsys.readouterr().out
    assert "[1/2] trial 0 COMPLETE" in printed and "[2/2] trial 1 COMPLETE" in printed
    assert "Pareto front (fid: minimize, latency: minimize)" in printed

    study = optuna.load_study(study_name="demo", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert {t.params["model.plan.source"] for t in study.trials} == {"random", "ga"}  # seeded: one of each
    client = MlflowClient(tracking)
    runs = _runs(client)
    assert len(runs) == 3
    (parent,) = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    assert parent.data.tags["sweep.objectives"] == "fid,latency" and parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/complete_trials"] == 2
    front = json.loads(Path(client.download_artifacts(parent.info.run_id, "pareto_front.json", str(tmp_path))).read_text())
    assert [row["trial"] for row in front] == sorted(t.number for t in study.best_trials)
    assert "pareto_front.png" in [a.path for a in client.list_artifacts(parent.info.run_id)]

    children = {r.info.run_id: r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id}
    assert len(children) == 2
    for trial in study.trials:
        child = children[trial.user_attrs["mlflow_run_id"]]
        assert child.info.status == "FINISHED"
        for path, value in trial.params.items():
            assert child.data.params[path] == (value if isinstance(value, str) else json.dumps(value))
        metrics = child.data.metrics
        # fid was added to the evaluation metrics for the objective; the objective is the mean over domains
        assert metrics["objective/fid"] == pytest.approx((metrics["eval/fid/digits"] + metrics["eval/fid/glyphs"]) / 2)
        assert list(trial.values) == [pytest.approx(metrics["objective/fid"]), pytest.approx(metrics["objective/latency"])]
        # the latency objective is the modeled latency of the plan the run logged
        plan = SplitPlan.from_json(Path(client.download_artifacts(child.info.run_id, "plan.json", str(tmp_path))).read_text())
        expected = plan_latency(plan, GanNetworks(ReferenceGenerator(), ReferenceDiscriminator(), batch_size=8), seed=0)["latency_s"]
        assert metrics["objective/latency"] == pytest.approx(metrics["plan/latency_s"]) == pytest.approx(expected)
        # the GA's settings are sampled (and logged) only in the trial that uses the GA
        assert ("model.plan.ga.generations" in trial.params) == (trial.params["model.plan.source"] == "ga")
        assert ("model.plan.ga.generations" in child.data.params) == (trial.params["model.plan.source"] == "ga")
        if trial.params["model.plan.source"] == "ga":
            assert child.data.params["model/plan/ga/population"] == "12"


def test_failed_trials_are_recorded_and_the_study_goes_on_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, base_config: str
) -> None:
    monkeypatch.chdir(tmp_path)
    storage, tracking = _stores(tmp_path)
    search = {"model.federation.alpha": {"type": "float", "low": 0.5, "high": 2.0}}
    # 9 clusters for 4 clients: every trial raises while the run sets up
    config = _spec_file(tmp_path, base_config, objectives=["score"], n_trials=2, fixed={"model.federation.k": 9}, search_space=search)
    assert _run(config) == 0
    printed = capsys.readouterr().out
    assert "[1/2] trial 0 FAIL" in printed and "[2/2] trial 1 FAIL" in printed
    assert "the Pareto front is empty" in printed
    study = optuna.load_study(study_name="demo", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    client = MlflowClient(tracking)
    children = [r for r in _runs(client) if MLFLOW_PARENT_RUN_ID in r.data.tags]
    assert sorted(r.info.status for r in children) == ["FAILED", "FAILED"]
    assert all("federation.k" in r.data.tags["sweep.error"] for r in children)

    # resume by name, the cause fixed: the third trial completes in the same study and sweep run
    config = _spec_file(tmp_path, base_config, objectives=["score"], n_trials=2, search_space=search)
    assert _run(config, n_trials=1) == 0
    study = optuna.load_study(study_name="demo", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[2].values[0] > 0
    parents = [r for r in _runs(client) if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    assert len(parents) == 1
    assert parents[0].data.metrics["sweep/fail_trials"] == 2 and parents[0].data.metrics["sweep/complete_trials"] == 1


def test_single_objective_reports_each_round_score_to_optuna(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_config: str
) -> None:
    monkeypatch.chdir(tmp_path)
    storage, tracking = _stores(tmp_path)
    config = _spec_file(
        tmp_path, base_config, objectives=["score"], n_trials=1,
        search_space={"model.lr_g": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
    )
    assert _run(config, study_name="pruned") == 0
    (trial,) = optuna.load_study(study_name="pruned", storage=storage).trials
    assert trial.state == TrialState.COMPLETE
    history = MlflowClient(tracking).get_metric_history(trial.user_attrs["mlflow_run_id"], "eval/score_mean")
    # step = round, and each round's own score (the pruning callback runs after that round's evaluation)
    assert trial.intermediate_values == {m.step: pytest.approx(m.value) for m in history}
    assert sorted(trial.intermediate_values) == [1, 2]
    assert trial.values[0] == pytest.approx(max(history, key=lambda m: m.step).value)


def test_a_pruned_trial_is_pruned_in_optuna_and_killed_in_mlflow_and_the_study_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, base_config: str
) -> None:
    """A threshold no generation score can reach (it is at most 10) prunes every trial at its first round."""
    monkeypatch.chdir(tmp_path)
    storage, tracking = _stores(tmp_path)
    config = _spec_file(
        tmp_path, base_config, objectives=["score"], n_trials=2,
        pruner={"type": "ThresholdPruner", "lower": 11.0},
        search_space={"model.lr_g": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
    )
    assert _run(config, study_name="pruning") == 0
    trials = optuna.load_study(study_name="pruning", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(sorted(t.intermediate_values) == [1] for t in trials)  # stopped after round 1 of 2
    client = MlflowClient(tracking)
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED" and run.data.tags["sweep.state"] == "PRUNED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/score_mean")] == [1]
    (parent,) = [r for r in _runs(client) if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    assert parent.data.metrics["sweep/pruned_trials"] == 2


def test_an_unknown_pruner_type_is_a_clear_error() -> None:
    with pytest.raises(SweepError, match="'Median' is not an Optuna pruner; choose one of .*'MedianPruner'"):
        sweep_from_mapping({"study_name": "s", "objectives": ["score"], "pruner": {"type": "Median"}})
    with pytest.raises(SweepError, match="do not fit ThresholdPruner"):
        sweep_from_mapping({"study_name": "s", "objectives": ["score"], "pruner": {"type": "ThresholdPruner", "low": 1}})


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"fixed": {"model.federation.alhpa": 1.0}}, "'model.federation.alhpa' (close: ['model.federation.alpha'"),
        ({"search_space": {"model.plan.ga.populaton": {"type": "int", "low": 2, "high": 4}}}, "model.plan.ga.population"),
        ({"search_space": {"model.federaton.k": {"type": "int", "low": 1, "high": 2}}}, "model.federation.k"),
        ({"fixed": {"model.federation.alpha": "abc"}}, "alpha"),
        ({"search_space": {"model.plan.source": {"type": "categorical", "choices": ["random", "magic"]}}}, "magic"),
        ({"objectives": ["fid", "speed"]}, "speed"),
        ({"fixed": {"trainer.logger": False}}, "trainer.logger is False"),
        ({"storage": "nodb://x"}, "Cannot open the Optuna storage"),
        ({"search_space": {"model.rounds": {"type": "int", "low": 3, "high": 1}}}, "low <= high"),
        ({"search_space": {"model.plan.ga.population": {"type": "int", "low": 5, "high": 50}}}, "elite must be in [0, population)"),
        ({"search_space": {"model.plan.cut": {"type": "categorical", "choices": ["[1, 1, 1, 1]"],
                                              "when": {"model.plan.sorce": "uniform"}}}},
         "condition only on fixed keys or on other searched parameters"),
        ({"search_space": {"model.plan.source": {"type": "categorical", "choices": ["random", "ga"]},
                           "model.plan.ga.generations": {"type": "int", "low": 2, "high": 4, "when": {"model.plan.source": "GA"}}}},
         "model.plan.source in ['GA'], which is not among its choices"),
    ],
)
def test_a_bad_spec_is_a_clear_error_before_any_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_config: str, entries: dict, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _spec_file(tmp_path, base_config, **entries)
    with pytest.raises(SweepError) as error:
        _run(config)
    assert message in str(error.value)
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_an_unreachable_tracking_uri_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_config: str) -> None:
    monkeypatch.chdir(tmp_path)
    config = _spec_file(tmp_path, base_config, search_space={"model.federation.alpha": {"type": "float", "low": 0.5, "high": 2}})
    started = time.perf_counter()
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9 cannot be reached"):
        _run(config, tracking_uri="http://127.0.0.1:9")
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "optuna.db").exists()


def test_packaged_sweeps_pass_the_checks() -> None:
    folder = Path(__file__).parents[1] / "sweeps"
    for name, objectives in (("cuts_and_clusters", ("fid", "latency")), ("single_objective", ("score",))):
        spec = load_sweep(folder / f"{name}.yaml")
        assert spec.objectives == objectives
        prepared = prepare(spec)
        assert prepared.experiment_name == "huscf-sweeps" and prepared.tracking_uri == "sqlite:///mlflow.db"
        if "fid" in objectives:
            assert "fid" in prepared.fixed["model.evaluation.metrics"]
    single = load_sweep(folder / "single_objective.yaml")
    assert single.pruning_monitor == "eval/score_mean"
    assert isinstance(single.make_pruner(), optuna.pruners.MedianPruner)
    assert isinstance(load_sweep(folder / "cuts_and_clusters.yaml").make_sampler(), optuna.samplers.NSGAIISampler)


def test_spec_mapping_errors_name_the_key() -> None:
    with pytest.raises(SweepError, match="close: .*'search_space'"):
        sweep_from_mapping({"study_name": "x", "serch_space": {}})
    with pytest.raises(SweepError, match="both fixed and searched"):
        sweep_from_mapping({"study_name": "x", "fixed": {"model.rounds": 2}, "search_space": {"model.rounds": {"type": "int", "low": 1, "high": 2}}})
    with pytest.raises(SweepError, match="both log: true and a step"):
        sweep_from_mapping({"study_name": "x", "search_space": {"model.lr_g": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True, "step": 1e-4}}})
    with pytest.raises(SweepError, match="as YAML text"):
        sweep_from_mapping({"study_name": "x", "search_space": {"model.plan.cut": {"type": "categorical", "choices": [[1, 1, 1, 1]]}}})


def test_plan_latency_of_a_ga_plan_equals_the_selection_latency() -> None:
    networks = GanNetworks(ReferenceGenerator(), ReferenceDiscriminator())
    ga = PlanSpec(source="ga", ga={"population": 30, "generations": 20})
    selection = select_cuts(6, networks, ga, seed=3, shared_d_block=True)
    report = plan_latency(selection.plan, networks, seed=3)
    assert report["latency_s"] == pytest.approx(selection.latency_s, rel=1e-12)
    assert report["breakdown"] == selection.breakdown
    assert report["client_profiles"] == list(selection.client_profiles)
    assert report["client_busy_s"] == pytest.approx(list(selection.client_busy_s))
    # the exact optimum is no slower than any other plan over the same cut options
    best = select_cuts(6, networks, PlanSpec(source="exact"), seed=3, shared_d_block=True)
    for seed in range(3):
        other = SplitPlan.random(6, 5, 5, seed, shared_block=True)
        assert plan_latency(other, networks, seed=3)["latency_s"] >= best.latency_s - 1e-12


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"study_name: demo\nsearch_space:\n  model.rounds: {type: int, low: 1, high: [2\n",
         r"is not valid YAML: .* at line 4, column 1 .*Fix the YAML there"),
        (b"study_name: demo\n\tn_trials: 2\n", r"is not valid YAML: found character '\\t' .* at line 2, column 1"),
        (b"- study_name: demo\n- n_trials: 2\n", r"must be a YAML mapping .* but it holds a list"),
        (b"just a sentence\n", r"must be a YAML mapping .* but it holds a str \('just a sentence'\)"),
        (b"", r"is empty; write a YAML mapping"),
        (b"# only a comment\n", r"is empty; write a YAML mapping"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"is not a text file \(byte 0 is not UTF-8\)"),
        (b"study_name: demo\x00\n", r"is not a text file \(character '\\x00' at line 1, column 17\)"),
    ],
    ids=["unclosed-bracket", "tab", "list", "scalar", "empty", "comment-only", "binary", "nul-byte"],
)
def test_a_spec_file_that_is_not_a_yaml_mapping_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes, message: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_bytes(content)
    assert main(["sweep", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert error.startswith(f"error: The sweep spec {str(path)!r} ")
    assert re.search(message, error), error
    assert "\n" not in error and "Traceback" not in captured.err and "<unicode string>" not in error
    assert not (tmp_path / "optuna.db").exists()


def test_a_missing_spec_file_exits_2_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "nowhere.yaml"
    assert main(["sweep", "--config", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"error: No sweep spec at {str(path)!r}; give a YAML file such as sweeps/cuts_and_clusters.yaml."
