"""End-to-end `fit`: a run lands in a real SQLite MLflow store; resume equals an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from mlflow.tracking import MlflowClient

from huscf_lightning.__main__ import main
from huscf_lightning.cli.lightning_cli import run_cli
from huscf_lightning.nets import ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split import SplitPlan
from huscf_lightning.split.selection import GanNetworks, plan_latency

TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")
QUIET = [
    "--model.evaluation.metrics=[]",
    "--model.evaluation.utility_samples=0",
    "--model.evaluation.sample_grids=false",
]


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def test_fit_lands_a_run_in_sqlite_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", TINY]) == 0
    printed = capsys.readouterr().out
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in printed
    client = MlflowClient("sqlite:///mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.run_id in printed
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["model/rounds"] == "3"
    assert params["data/batch_size"] == "8"
    assert params["model/federation/mode"] == "kld_clustered"
    assert params["seed_everything"] == "0" and params["trainer/logger/experiment_name"] == "tests"
    # the resolved config once: no bare copy of the module's hyperparameters, no bookkeeping, no store address
    assert not any(k.startswith("config/") or "_instantiator" in k or "__default_config__" in k for k in params)
    assert "lr_g" not in params and "plan/source" not in params and not any("tracking_uri" in k for k in params)
    # a name that says what the run is: scenario, mode, seed, start time
    assert run.info.run_name.startswith("mnist5k:2:iid+glyphs:2:iid-kld_clustered-seed0-20")
    assert tags["plan_source"] == "random" and tags["num_clients"] == "4"
    assert tags["placement"] == "split" and tags["shares"] == "cut-layer activations and their gradients"
    assert tags["scenario"] == "mnist5k:2:iid+glyphs:2:iid"  # no data.scenario name: domains, clients, split
    for key in ("train/loss_d", "train/loss_g", "wire/bytes_up", "wire/bytes_down", "cluster/ari",
                "eval/score/mnist5k", "eval/score/glyphs", "eval/seconds", "utility/accuracy/glyphs", "utility/f1/mnist5k"):
        assert key in metrics, key
    assert len(client.get_metric_history(run.info.run_id, "wire/bytes_up")) == 3  # one per round
    assert len(client.get_metric_history(run.info.run_id, "train/loss_d")) == 6  # 2 steps x 3 epochs
    artifacts = _artifacts(client, run.info.run_id)
    for expected in ("plan.json", "config.yaml", "partition.csv", "clusters/round_003.json", "weights/round_003.json",
                     "exchange/round_001.json", "samples/mnist5k/round_001.png", "samples/glyphs/round_003.png",
                     "utility.csv", "score_curves.png"):
        assert expected in artifacts, expected
    assert any(a.endswith("last.ckpt") for a in artifacts)
    # a random plan gets its modeled latency too (at the run's batch size), so every run compares with GA runs
    plan = SplitPlan.from_json(Path(client.download_artifacts(run.info.run_id, "plan.json", str(tmp_path))).read_text())
    expected = plan_latency(plan, GanNetworks(ReferenceGenerator(), ReferenceDiscriminator(), batch_size=8), seed=0)["latency_s"]
    assert metrics["plan/latency_s"] == pytest.approx(expected)

    # the saved run can be evaluated from its checkpoint alone
    (checkpoint,) = tmp_path.glob("runs/*/*/checkpoints/last.ckpt")
    assert main(["evaluate", "--ckpt_path", str(checkpoint), "--samples", "100", "--epochs", "1", "--csv", "u.csv"]) == 0
    table = capsys.readouterr().out
    assert "mnist5k" in table and "glyphs" in table and "accuracy" in table
    assert (tmp_path / "u.csv").read_text().startswith("domain,")


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    (tmp_path / "keep.txt").write_text("already written")
    for command in (["fit", "--config", TINY, "--ckpt_path", "bad.ckpt"], ["evaluate", "--ckpt_path", "bad.ckpt"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "bad.ckpt cannot be read" in err and "Traceback" not in err
    assert (tmp_path / "keep.txt").read_text() == "already written"


def _final_weights(tmp: Path, args: list[str]) -> tuple[dict[str, torch.Tensor], str]:
    cli = run_cli(["fit", "--config", TINY, "--trainer.logger=false", "--trainer.deterministic=true",
                   f"--trainer.default_root_dir={tmp}", *QUIET, *args])
    return {k: v.clone() for k, v in cli.model.state_dict().items()}, cli.trainer.checkpoint_callback.last_model_path


def test_resume_from_a_mid_run_checkpoint_equals_the_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    # round 1 is FedAvg warm-up (tiny.yaml) and rounds 2-3 cluster: the resumed part continues clustered rounds
    full, _ = _final_weights(tmp_path / "full", ["--model.rounds=3"])
    part, checkpoint = _final_weights(tmp_path / "part", ["--model.rounds=2"])
    assert checkpoint and Path(checkpoint).exists()
    resumed, _ = _final_weights(tmp_path / "resumed", ["--model.rounds=3", f"--ckpt_path={checkpoint}"])
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)
    other, _ = _final_weights(tmp_path / "other", ["--model.rounds=2", "--seed_everything=1"])
    assert any(not torch.equal(other[k], part[k]) for k in part if part[k].is_floating_point())


def test_resume_mid_round_equals_the_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    """A checkpoint from inside a round (a user's every-epoch ModelCheckpoint, 2 local epochs a round) resumes to
    the same weights, optimiser states and round records as the run that never stopped."""
    monkeypatch.chdir(tmp_path)
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "every", every_n_epochs=1, save_top_k=-1, filename="{epoch}")
    args = ["fit", "--config", TINY, "--trainer.logger=false", "--trainer.deterministic=true", *QUIET,
            "--model.rounds=2", "--model.local_epochs=2", "--model.federation.warmup_rounds=1"]
    full = run_cli([*args, f"--trainer.default_root_dir={tmp_path / 'full'}"], extra_callbacks=[every_epoch])
    mid_round = tmp_path / "every" / "epoch=2.ckpt"  # after the first of round 2's two epochs
    assert mid_round.exists() and (tmp_path / "full").glob("**/last.ckpt")
    resumed = run_cli([*args, f"--trainer.default_root_dir={tmp_path / 'resumed'}", f"--ckpt_path={mid_round}"])
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    for opt_full, opt_resumed in zip(full.trainer.optimizers, resumed.trainer.optimizers):
        for state_full, state_resumed in zip(opt_full.state.values(), opt_resumed.state.values()):
            for name in ("exp_avg", "exp_avg_sq", "step"):
                torch.testing.assert_close(state_resumed[name], state_full[name], rtol=0, atol=0)

    def records(cli, kind: str) -> list:
        (callback,) = [c for c in cli.trainer.callbacks if type(c).__name__ == kind]
        return callback.history

    for kind in ("ClusteringRound", "FederatedAggregation", "CutLayerExchange"):
        assert records(resumed, kind) == records(full, kind), kind
    assert [r["mode"] for r in records(full, "FederatedAggregation")] == ["fedavg", "kld_clustered"]


def _per_sample_bytes(template, first_input: torch.Tensor) -> list[int]:
    """Bytes of one sample's float32 output of every block of an unsplit network."""
    sizes, x, labels = [], first_input, torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        for j, block in enumerate(template.eval().blocks):
            x = block(x, labels) if j == 0 else block(x)
            sizes.append(x[0].numel() * 4)
    return sizes


def test_wire_carries_exactly_the_cut_activations_and_gradients_of_training(tmp_path: Path, monkeypatch) -> None:
    """Per client and direction, one round's bytes equal the analytic cut sizes: G crosses each of its cuts once
    per step each way, D three times (fakes, reals, and the G step through D); plus, at the round end, the state
    of the blocks the client holds, sent for averaging and received back; nothing else crosses."""
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", "--config", TINY, "--trainer.logger=false", "--model.rounds=1", "--model.federation.mode=fedavg", *QUIET])
    samples = 16  # tiny.yaml: every client holds cap = 16 images, one local epoch
    assert cli.datamodule.client_sizes == [samples] * 4
    g_bytes = _per_sample_bytes(ReferenceGenerator(), torch.randn(2, 100))
    d_bytes = _per_sample_bytes(ReferenceDiscriminator(), torch.randn(2, 1, 28, 28))
    plan = cli.model.plan
    (exchange,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "CutLayerExchange"]
    (record,) = exchange.history
    for i, row in enumerate(record["clients"]):
        (gh, gt), (dh, dt) = plan.head_tails("G")[i], plan.head_tails("D")[i]
        g_head, g_tail = g_bytes[gh - 1], g_bytes[len(g_bytes) - gt - 1]
        d_head, d_tail = d_bytes[dh - 1], d_bytes[len(d_bytes) - dt - 1]
        # up: head activations and tail gradients; down: head gradients and tail activations
        expected = samples * (g_head + g_tail + 3 * (d_head + d_tail))
        held = [cli.model.G.client_state(i), cli.model.D.client_state(i)]
        weights = sum(t.numel() * t.element_size() for state in held for t in state.values())
        assert record["wire/G.weights/up"] + record["wire/D.weights/up"] == sum(
            t.numel() * t.element_size() for c in range(4) for net in (cli.model.G, cli.model.D)
            for t in net.client_state(c).values())
        assert row == {"client": i, "up": expected + weights, "down": expected + weights}, (i, plan.head_tails("G")[i])
    assert cli.model.wire.dtypes_carried == {torch.float32}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.roundz=1"], ("unknown config key(s) 'model.roundz'", "did you mean model.rounds", "--print_config")),
        (["--model.federation.alpah=2"], ("'model.federation.alpah'", "did you mean model.federation.alpha")),
        (["--model.rounds=many"], ('"model.rounds"', "Got value: many")),
        (["--model.lr_d=nan"], ('"model.lr_d"', "Got value: nan", "takes a finite number")),
        (["--model.federation.alpha=x"], ('"model.federation.alpha"', "Got value: x")),
        (["--data.domains=[{name: mnist9k, clients: 2}]"], ("Unknown domain 'mnist9k'", "Known domains: digits", "register_domain")),
        (["--model.plan.source=uniform", "--model.plan.cut=[2,3,1,1]"], ("head + tail <= 4", "Valid (head, tail) pairs")),
        (["--data.domains=[{name: fashion_mnist, clients: 2, root: /nonexistent/fmnist}]"],
         ("/nonexistent/fmnist", "apt-get install dataset-fashion-mnist", "set the domain's `root:`")),
        (["--model.federation.mode=fedprox"], ("fedprox", "kld_clustered")),
        (["--model.evaluation.metrics=[score,bogus]"], "bogus"),
        (["--model.federation.k=9"], "federation.k = 9"),
        (["--model.federation.alpha=-1"], "federation.alpha"),
        (["--trainer.max_epochs=5"], "set --model.rounds instead"),
        (["--model.federation.k_range=[1,4]"], "federation.k_range"),
        (["--model.evaluation.inception_weights=/nonexistent/inception.pt"], "'/nonexistent/inception.pt' is not a file"),
        (["--model.num_classes=5"], "--model.num_classes=10"),
        (["--model.plan.source=ga", "--model.plan.ga={population: '1000'}"], "population='1000'"),
        (["--trainer.logger=lightning.pytorch.loggers.MLFlowLogger", "--trainer.logger.tracking_uri=http://127.0.0.1:9"],
         "http://127.0.0.1:9 cannot be reached"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path: Path, monkeypatch, capsys, args: list[str], message: str | tuple) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["fit", "--config", TINY, "--trainer.logger=false", *args])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    for part in (message,) if isinstance(message, str) else message:  # the problem and, where given, the fix
        assert part in err, part
    assert "Traceback" not in err and "usage:" not in err  # one paragraph, not a listing of every option


def test_an_unknown_key_in_a_config_file_names_the_close_keys(tmp_path: Path, capsys) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("model:\n  roundz: 3\n  federation:\n    mode: fedavg\n")
    with pytest.raises(SystemExit) as exit_:  # the parser's own exit, as for any argument error
        main(["fit", "--config", TINY, "--config", str(config), "--trainer.logger=false"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown config key(s) 'model.roundz' (did you mean model.rounds" in err and "usage:" not in err


def test_ga_plan_is_chosen_and_logged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", "--config", TINY, "--model.rounds=1", "--model.plan.source=ga",
                   "--model.plan.ga={population: 60, generations: 30}", *QUIET])
    client = MlflowClient("sqlite:///mlflow.db")
    run = client.get_run(cli.trainer.logger.run_id)
    assert run.data.tags["plan_source"] == "ga"
    report = cli.model.plan_report
    assert run.data.metrics["plan/latency_s"] == pytest.approx(report["latency_s"])
    assert len(report["client_profiles"]) == 4 and report["breakdown"]["iteration_s"] == pytest.approx(report["latency_s"])
    assert "cut_selection.json" in _artifacts(client, run.info.run_id)
    # clustering is on, so every GA cut keeps the middle D block on the server
    assert cli.model.D.common_server_block() is not None
    assert report["plan"] == cli.model.plan.to_dict()


def test_evaluate_refuses_a_non_positive_sample_count(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--ckpt_path", "last.ckpt", "--samples", "0"])
    assert exit_.value.code == 2
    assert "--samples: must be a whole number >= 1, got 0" in capsys.readouterr().err


def test_a_resumed_fit_gets_its_own_full_record_linked_to_the_run_it_continues(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # absolute: MLflow caches a store by its URI across tests
    tracked = [*QUIET, f"--trainer.logger.init_args.tracking_uri={store}"]
    assert main(["fit", "--config", TINY, *tracked, "--model.rounds=1"]) == 0
    (checkpoint,) = tmp_path.glob("runs/*/*/checkpoints/last.ckpt")
    assert main(["fit", "--config", TINY, *tracked, "--model.rounds=2", f"--ckpt_path={checkpoint}"]) == 0
    client = MlflowClient(store)
    first, resumed = sorted(client.search_runs([client.get_experiment_by_name("tests").experiment_id]),
                            key=lambda run: run.info.start_time)
    assert resumed.data.tags["resumed_from_run"] == first.info.run_id
    assert resumed.data.tags["resumed_at_round"] == "2"
    for run in (first, resumed):
        assert run.data.tags["plan_source"] == "random" and "scenario" in run.data.tags
        assert {"plan.json", "partition.csv", "cut_selection.json", "config.yaml"} <= set(_artifacts(client, run.info.run_id))
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "wire/bytes_up")] == [2]
