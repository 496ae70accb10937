"""Comparisons: cells land as child runs of one parent, the table equals the child runs' metrics, an
interrupted comparison resumes with only the unfinished cells, and bad specs fail before any cell runs."""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from huscf_lightning.__main__ import main
from huscf_lightning.cli import compare as compare_command
from huscf_lightning.compare import (
    CellOutcome,
    CompareError,
    cell_values,
    compare_from_mapping,
    gains,
    load_compare,
    markdown_table,
    prepare,
    run_comparison,
    summarize,
)

DOMAINS = ["digits", "glyphs"]
SCENARIO = {
    "data": {
        "domains": [
            {"name": "digits", "clients": 2},
            {"name": "glyphs", "clients": 2, "options": {"train_per_class": 20, "test_per_class": 10}},
        ]
    }
}
METHODS = {"fedavg": {"model.federation.mode": "fedavg"}, "huscf": {"model.federation.mode": "kld_clustered"}}


@pytest.fixture(scope="module")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The smallest fit that logs every table metric: 4 clients, 2 rounds of 2 steps, tiny evaluation."""
    folder = tmp_path_factory.mktemp("compare_base")
    config = {
        "trainer": {
            "logger": {
                "class_path": "lightning.pytorch.loggers.MLFlowLogger",
                "init_args": {"experiment_name": "compare-tests", "tracking_uri": "sqlite:///unused.db", "log_model": False},
            },
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "enable_checkpointing": False,
            "log_every_n_steps": 1,
        },
        "model": {
            "rounds": 2,
            "local_epochs": 1,
            "federation": {"warmup_rounds": 1},
            "evaluation": {
                "num_samples": 100,
                "utility_samples": 200,
                "utility_epochs": 1,
                "sample_grids": False,
                "classifier_cache": str(folder / "classifiers"),  # trained once for every test here
            },
        },
        "data": {"batch_size": 8, "cap": 16},
    }
    path = folder / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _spec(folder: Path, base_config: str, **entries) -> dict:
    return {
        "name": "tiny",
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
        "base_config": base_config,
        "methods": METHODS,
        "scenarios": {"two": SCENARIO},
        "seeds": [0, 1],
        "ours": "huscf",
        **entries,
    }


def _spec_file(folder: Path, spec: dict) -> str:
    path = folder / "compare.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def _command(config: str) -> int:
    parser = argparse.ArgumentParser()
    compare_command.add_arguments(parser)
    return compare_command.run(parser.parse_args([f"--config={config}"]))


@pytest.mark.slow  # four tiny fits: about 2.5 CPU-minutes (7 minutes wall on the shared 2-core machine)
def test_interrupted_comparison_resumes_and_its_table_equals_the_child_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, base_config: str
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _spec_file(tmp_path, _spec(tmp_path, base_config))
    spec = load_compare(config)

    def interrupt(outcome: CellOutcome, index: int, total: int) -> None:
        raise KeyboardInterrupt  # Ctrl+C right after the first cell finished

    with pytest.raises(KeyboardInterrupt):
        run_comparison(spec, on_cell=interrupt)
    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name("compare-tests").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    assert parent.info.status == "KILLED" and parent.data.tags["compare.name"] == "tiny"
    (first,) = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert first.info.status == "FINISHED" and first.data.tags["compare.cell"] == "method=fedavg|scenario=two|seed=0"
    # a process killed inside the second cell leaves its child run RUNNING: it is rerun, not trusted
    stale = client.create_run(experiment, tags={
        MLFLOW_PARENT_RUN_ID: parent.info.run_id, "compare.cell": "method=huscf|scenario=two|seed=0",
    }).info.run_id

    assert _command(config) == 0
    printed = capsys.readouterr().out
    assert f"[1/4] fedavg x two x seed 0: skipped, finished earlier (run {first.info.run_id})" in printed
    for line in ("[2/4] huscf x two x seed 0: finished", "[3/4] fedavg x two x seed 1: finished", "[4/4] huscf x two x seed 1: finished"):
        assert line in printed
    assert "| utility accuracy | digits | higher |" in printed and "gain vs fedavg" in printed

    runs = client.search_runs([experiment])
    (resumed,) = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    assert resumed.info.run_id == parent.info.run_id and resumed.info.status == "FINISHED"
    assert client.get_run(stale).info.status == "KILLED"
    children = [r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id and r.info.status == "FINISHED"]
    assert len(children) == 4  # the first cell ran once: skipped on resume
    cells = {(r.data.tags["compare.method"], int(r.data.tags["compare.seed"])): r for r in children}
    assert cells[("fedavg", 0)].info.run_id == first.info.run_id
    # the children ran their method on the inline scenario's domains, each with its seed
    assert {r.data.params["model/federation/mode"] for r in children} == {"fedavg", "kld_clustered"}
    assert {r.data.params["seed_everything"] for r in children} == {"0", "1"}
    assert all(r.data.tags["domains"] == "digits,glyphs" for r in children)

    csv_path = client.download_artifacts(parent.info.run_id, "comparison.csv", str(tmp_path))
    table = {(r["metric"], r["domain"], r["method"]): r for r in csv.DictReader(Path(csv_path).read_text().splitlines())}
    for method in METHODS:
        runs_of = [cells[(method, seed)] for seed in (0, 1)]
        for metric, key in (("accuracy", "utility/accuracy"), ("f1", "utility/f1"), ("score", "eval/score"), ("fid", "eval/fid")):
            per_seed = [[r.data.metrics[f"{key}/{d}"] for d in DOMAINS] for r in runs_of]
            for i, domain in enumerate(DOMAINS):
                samples = [s[i] for s in per_seed]
                row = table[(metric, domain, method)]
                assert float(row["mean"]) == pytest.approx(statistics.mean(samples))
                assert float(row["std"]) == pytest.approx(statistics.stdev(samples))
            averaged = [statistics.mean(s) for s in per_seed]
            assert float(table[(metric, "mean", method)]["mean"]) == pytest.approx(statistics.mean(averaged))
        latency = [r.data.metrics["plan/latency_s"] for r in runs_of]
        assert float(table[("latency", "", method)]["mean"]) == pytest.approx(statistics.mean(latency))
        per_round = []
        for r in runs_of:
            up = client.get_metric_history(r.info.run_id, "wire/bytes_up")
            down = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "wire/bytes_down")}
            assert len(up) == 2  # one per round
            per_round.append(statistics.mean(m.value + down[m.step] for m in up))
        assert float(table[("bytes", "", method)]["mean"]) == pytest.approx(statistics.mean(per_round))
    ours, theirs = (float(table[("score", "mean", m)]["mean"]) for m in ("huscf", "fedavg"))
    assert float(table[("score", "mean", "fedavg")]["gain_pct_of_ours"]) == pytest.approx(100 * (ours - theirs) / abs(theirs))
    assert table[("fid", "digits", "huscf")]["better"] == "lower" and table[("fid", "digits", "huscf")]["gain_pct_of_ours"] == ""
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.csv", "comparison.md", "compare.yaml", "charts"} <= artifacts
    charts = {a.path for a in client.list_artifacts(parent.info.run_id, "charts")}
    assert charts == {f"charts/{m}.png" for m in ("accuracy", "f1", "score", "fid", "latency", "bytes")}


def test_a_finished_comparison_reruns_nothing_and_rebuilds_its_table_from_the_child_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_config: str
) -> None:
    """Every cell already has a FINISHED child run (logged here by hand, in a real store): no fit runs."""
    monkeypatch.chdir(tmp_path)
    spec = compare_from_mapping(_spec(tmp_path, base_config), folder=tmp_path)
    client = MlflowClient(spec.tracking_uri)
    experiment = client.create_experiment("compare-tests")
    parent = client.create_run(experiment, tags={"compare.name": "tiny"}).info.run_id
    fingerprints = prepare(spec, tmp_path).fingerprints
    longer = compare_from_mapping(_spec(tmp_path, base_config, fixed={"model.rounds": 3}), folder=tmp_path)
    assert set(prepare(longer, tmp_path).fingerprints.values()).isdisjoint(fingerprints.values())  # no reuse then
    logged = {}
    for number, cell in enumerate(spec.cells):
        tags = {MLFLOW_PARENT_RUN_ID: parent, "compare.cell": cell.key, "compare.fingerprint": fingerprints[cell]}
        run = client.create_run(experiment, tags=tags).info.run_id
        for step, scale in ((1, 0.5), (2, 1.0)):  # two rounds: the table takes the last
            client.log_metric(run, "eval/score/digits", scale * (2 + number), step=step)
            client.log_metric(run, "eval/score/glyphs", scale * (3 + number), step=step)
            client.log_metric(run, "wire/bytes_up", 100.0 * step, step=step)
            client.log_metric(run, "wire/bytes_down", 10.0 * step, step=step)
        client.log_metric(run, "plan/latency_s", 1.0 + number)
        client.set_terminated(run, "FINISHED")
        logged[(cell.method, cell.seed)] = run
    outcomes = []
    result = run_comparison(spec, on_cell=lambda outcome, index, total: outcomes.append(outcome))
    assert [o.state for o in outcomes] == ["skipped"] * 4 and result.parent_run_id == parent
    assert [o.run_id for o in outcomes] == [logged[(c.method, c.seed)] for c in spec.cells]
    rows = {(r.metric, r.domain, r.method): r for r in result.rows}
    # cells in order: fedavg seed 0 (number 0), huscf seed 0 (1), fedavg seed 1 (2), huscf seed 1 (3)
    assert rows[("score", "digits", "huscf")].mean == pytest.approx(4.0)  # (3 + 5) / 2
    assert rows[("score", "mean", "fedavg")].mean == pytest.approx(3.5)  # seeds: (2 + 3) / 2 and (4 + 5) / 2
    assert rows[("score", "mean", "fedavg")].std == pytest.approx(statistics.stdev([2.5, 4.5]))
    assert rows[("latency", "", "huscf")].mean == pytest.approx(3.0)
    assert rows[("bytes", "", "fedavg")].mean == pytest.approx(165.0)  # rounds 110 and 220
    assert math.isnan(rows[("accuracy", "digits", "fedavg")].mean)  # never logged: n/a
    assert client.get_run(parent).info.status == "FINISHED"
    assert "| generation score | mean | higher | 3.5 ± 1.414 | 4.5 ± 1.414 | +28.6 % |" in result.markdown


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"methods": ["fedavg", "kld_clusterd"]}, "unknown method(s) ['kld_clusterd']"),
        ({"scenarios": {"one": {"data": {"domains": [{"name": "digits", "clients": 1}]}}}},
         "Method 'huscf' on scenario 'one' cannot run: federation.mode=kld_clustered clusters clients, which needs at least 2 clients"),
        ({"methods": {**METHODS, "longer": {"model.federation.mode": "fedavg", "model.rounds": 3}}},
         "The budget differs between cells: model.rounds is 2 in fedavg x two, huscf x two; 3 in longer x two"),
        ({"methods": {**METHODS, "bigger": {"data.batch_size": 16}}}, "Method 'bigger' sets ['data.batch_size']"),
        ({"methods": {**METHODS, "seeded": {"seed_everything": 3}}}, "Method 'seeded' sets ['seed_everything']"),
        ({"methods": {**METHODS, "typo": {"model.federation.alhpa": 2.0}}}, "'model.federation.alpha'"),
        ({"ours": "mine"}, "ours: 'mine' is not among the compared methods"),
    ],
    ids=["unknown-method", "one-client-clustering", "budget-differs", "method-sets-data", "method-sets-seed",
         "unknown-key", "unknown-ours"],
)
def test_bad_specs_fail_before_any_cell_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, base_config: str,
    change: dict, expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _spec_file(tmp_path, _spec(tmp_path, base_config, **change))
    assert main(["compare", "--config", config]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and expected in error and error.count("\n") == 1  # one paragraph
    assert not (tmp_path / "mlflow.db").exists()  # nothing was run or recorded


def test_a_scenario_file_with_training_settings_is_refused(tmp_path: Path, base_config: str) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({**SCENARIO, "model": {"rounds": 9}}))
    spec = compare_from_mapping(_spec(tmp_path, base_config, scenarios=["scenario.yaml"]), folder=tmp_path)
    with pytest.raises(CompareError, match=r"must hold only a data: section, but it holds \['data', 'model'\]"):
        run_comparison(spec)
    with pytest.raises(CompareError, match="scenario file .*missing.yaml' does not exist"):
        compare_from_mapping(_spec(tmp_path, base_config, scenarios=["missing.yaml"]), folder=tmp_path)


def test_table_means_stds_domain_average_and_gains() -> None:
    def values(acc_a: float, acc_b: float, latency: float) -> dict[str, float]:
        metrics = {"utility/accuracy/a": acc_a, "utility/accuracy/b": acc_b, "plan/latency_s": latency}
        return cell_values(metrics, [10.0, 20.0], [1.0, 3.0], ["a", "b"])

    cells = {("s", "ours"): [values(0.8, 0.6, 2.0), values(0.6, 0.4, 4.0)], ("s", "base"): [values(0.5, 0.5, 4.0)]}
    rows = {(r.metric, r.domain, r.method): r for r in summarize(cells, {"s": ["a", "b"]})}
    assert rows[("accuracy", "a", "ours")].mean == pytest.approx(0.7)
    assert rows[("accuracy", "a", "ours")].std == pytest.approx(statistics.stdev([0.8, 0.6]))
    assert rows[("accuracy", "mean", "ours")].mean == pytest.approx(0.6)  # per seed 0.7 and 0.5
    assert rows[("accuracy", "mean", "ours")].std == pytest.approx(statistics.stdev([0.7, 0.5]))
    assert math.isnan(rows[("accuracy", "a", "base")].std) and rows[("accuracy", "a", "base")].seeds == 1
    assert rows[("bytes", "", "base")].mean == pytest.approx(17.0)  # (11 + 23) / 2
    assert math.isnan(rows[("score", "a", "base")].mean)  # not logged: n/a, not a made-up number
    gain = gains(list(rows.values()), "ours")
    assert gain[("s", "accuracy", "mean", "base")] == pytest.approx(20.0)  # 0.6 against 0.5
    assert gain[("s", "latency", "", "base")] == pytest.approx(-25.0)  # 3 s against 4 s: lower is better
    text = markdown_table(list(rows.values()), "ours")
    assert "| utility accuracy | mean | higher | 0.6 ± 0.1414 | 0.5 | +20.0 % |" in text
    assert "| modeled latency per iteration (s) | all | lower | 3 ± 1.414 | 4 | -25.0 % |" in text
    assert "| generation score | a | higher | n/a | n/a |  |" in text


def test_row_order_and_methods_shorthand() -> None:
    spec = compare_from_mapping({
        "name": "x", "methods": ["fedavg", "kld_clustered"], "scenarios": {"s": SCENARIO}, "seeds": [0, 1],
    })
    assert spec.ours == "kld_clustered"
    assert [m.overrides for m in spec.methods] == [{"model.federation.mode": "fedavg"}, {"model.federation.mode": "kld_clustered"}]
    assert [c.label for c in spec.cells] == [
        "fedavg x s x seed 0", "kld_clustered x s x seed 0", "fedavg x s x seed 1", "kld_clustered x s x seed 1",
    ]
