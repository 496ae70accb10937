"""The attacks as a record: the ``privacy`` command on a saved run lands in its MLflow record, a comparison
attacks its cells (also ones finished before attacks were asked for), and bad input fails before any attack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from huscf_lightning.__main__ import main
from huscf_lightning.cli import run_cli
from huscf_lightning.compare import compare_from_mapping, run_comparison
from huscf_lightning.privacy.attacks import AttackError
from huscf_lightning.privacy.attacks.record import attack_settings, summarise

TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")
FAST = {"batch_size": 8, "clients_per_domain": 1, "at_initialisation": False, "inversion": {"steps": 40},
        "decoder": {"epochs": 2}, "probe": {"samples": 256, "steps": 30}, "classifier_epochs": 1}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the attacks' small ops wait on a busy second core more than they gain from it
    yield
    torch.set_num_threads(threads)


def _row(**values: float) -> dict:
    base = {"inversion_psnr": 20.0, "decoder_psnr": 15.0, "inversion_ssim": 0.5, "decoder_ssim": 0.7,
            "inversion_class_accuracy": 0.9, "decoder_class_accuracy": 0.8, "inversion_label_accuracy": 0.3,
            "g_probe_accuracy": 1.0, "d_probe_accuracy": 0.2, "real_class_accuracy": 1.0, "chance": 0.1,
            "psnr_mean_image": 11.0, "d_head": 1}
    return base | values


def test_the_summary_is_the_mean_over_clients_of_the_best_attack() -> None:
    summary = summarise([_row(), _row(inversion_psnr=10.0, g_probe_accuracy=0.1, d_probe_accuracy=0.4)])
    assert summary["reconstruction_psnr"] == pytest.approx((20.0 + 15.0) / 2)  # the better of inversion and decoder
    assert summary["reconstruction_ssim"] == pytest.approx(0.7)
    assert summary["label_accuracy"] == pytest.approx((1.0 + 0.4) / 2)
    assert summary["inversion_psnr"] == pytest.approx(15.0) and summary["mean_image_psnr"] == pytest.approx(11.0)


def test_unknown_or_impossible_attack_settings_are_clear_errors() -> None:
    with pytest.raises(AttackError, match="inversion_step.*close"):
        attack_settings({"inversion_step": 3})
    with pytest.raises(AttackError, match="Unknown decoder setting"):
        attack_settings({"decoder": {"epoch": 2}})
    with pytest.raises(AttackError, match="clients_per_domain"):
        attack_settings({"clients_per_domain": 0})
    assert attack_settings(FAST).decoder.epochs == 2


def _fit(tmp: Path, uri: str | None) -> str:
    logger = [f"--trainer.logger.init_args.tracking_uri={uri}"] if uri else ["--trainer.logger=false"]
    cli = run_cli(["fit", "--config", TINY, f"--trainer.default_root_dir={tmp}", "--model.rounds=1",
                   "--model.generator.init_args.width=0.25", "--model.discriminator.init_args.width=0.25",
                   "--model.evaluation.metrics=[]", "--model.evaluation.utility_samples=0",
                   "--model.evaluation.sample_grids=false", "--model.plan.source=uniform", *logger])
    return cli.trainer.checkpoint_callback.last_model_path


FAST_FLAGS = ["--batch_size=8", "--clients_per_domain=1", "--inversion_steps=40", "--decoder_epochs=2"]


def test_the_privacy_command_logs_every_attack_into_the_runs_record(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ckpt = _fit(tmp_path, uri)
    assert main(["privacy", f"--ckpt_path={ckpt}", f"--tracking_uri={uri}", *FAST_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "reconstruction_psnr" in printed and "initialisation" in printed
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    metrics = run.data.metrics
    for name in ("reconstruction_psnr", "label_accuracy", "mean_image_psnr", "init/reconstruction_psnr", "d_head_1/decoder_psnr"):
        assert f"privacy/{name}" in metrics, name
    record = json.loads(Path(client.download_artifacts(run.info.run_id, "privacy/attacks.json", str(tmp_path))).read_text())
    assert [r["domain"] for r in record["trained"]] == ["mnist5k", "glyphs"]  # the first client of each domain
    assert record["summary"]["reconstruction_psnr"] == pytest.approx(metrics["privacy/reconstruction_psnr"])


def test_a_checkpoint_without_a_record_is_refused_before_the_attacks_unless_nothing_is_logged(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt = _fit(tmp_path, None)
    assert main(["privacy", f"--ckpt_path={ckpt}", *FAST_FLAGS]) == 2
    assert "names no MLflow run" in capsys.readouterr().err
    assert main(["privacy", f"--ckpt_path={ckpt}", "--no_log", "--skip_initialisation", "--public=glyphs", *FAST_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "reconstruction_psnr" in printed and "initialisation" not in printed
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["privacy", f"--ckpt_path={garbage}", "--no_log"]) == 2


def test_a_comparison_attacks_new_cells_and_cells_finished_before_attacks_were_asked_for(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = yaml.safe_load(Path(TINY).read_text())
    base["trainer"]["logger"]["init_args"]["log_model"] = True
    base["model"]["evaluation"] = {"metrics": ["score"], "num_samples": 100, "utility_samples": 200, "utility_epochs": 1,
                                   "sample_grids": False, "classifier_cache": str(tmp_path / "classifiers")}
    base["model"]["rounds"] = 1
    for net in ("generator", "discriminator"):
        base["model"][net]["init_args"]["width"] = 0.25
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {"name": "privacy", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "base_config": "base.yaml",
            "methods": {"plain": {}}, "scenarios": {"tiny": {"data": base["data"]}}, "fixed": {"model.plan.source": "uniform"}}
    with pytest.raises(AttackError, match="clients_per_domain"):  # before any cell trains: no run, no store
        run_comparison(compare_from_mapping(spec | {"privacy_attacks": {"clients_per_domain": 0}}, folder=tmp_path))
    assert not (tmp_path / "mlflow.db").exists()
    first = run_comparison(compare_from_mapping(spec, folder=tmp_path))
    assert "server's image reconstruction" not in first.markdown
    hidden = {"model.privacy.masked_aggregation": True, "model.privacy.private_initialisation": True}
    spec |= {"privacy_attacks": FAST, "methods": {"plain": {}, "hidden": hidden}}
    second = run_comparison(compare_from_mapping(spec, folder=tmp_path))
    assert [o.state for o in second.outcomes] == ["skipped", "finished"]
    client = MlflowClient(spec["tracking_uri"])
    psnr = {o.cell.method: client.get_run(o.run_id).data.metrics["privacy/reconstruction_psnr"] for o in second.outcomes}
    # the attacker of a masked run with private initial weights never held any of the heads': it does far worse
    assert psnr["plain"] > psnr["hidden"] + 5, psnr
    assert "server's image reconstruction, PSNR" in second.markdown and "label recovery" in second.markdown
    artifacts = [a.path for a in client.list_artifacts(second.parent_run_id, "charts")]
    assert "charts/tradeoff.png" in artifacts


def test_the_attackers_initial_weights_are_the_runs_own_initialisation(tmp_path, monkeypatch) -> None:
    """Masked aggregation leaves the server the initial weights only; those are the run's own (a shared
    initialisation), rebuilt from its seed: a fit at a learning rate of 1e-12 still holds them."""
    from huscf_lightning.privacy.attacks import head_path

    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", "--config", TINY, f"--trainer.default_root_dir={tmp_path}", "--model.rounds=1",
                   "--trainer.logger=false", "--model.lr_g=1e-12", "--model.lr_d=1e-12", "--seed_everything=3",
                   "--model.evaluation.metrics=[]", "--model.evaluation.utility_samples=0",
                   "--model.evaluation.sample_grids=false"])
    for network in ("G", "D"):
        trained, initial = head_path(cli.model, network, 0, "client"), head_path(cli.model, network, 0, "initial")
        unrelated = head_path(cli.model, network, 0, "initial", seed=4)
        apart = []
        for (name, a), b, c in zip(trained.named_parameters(), initial.parameters(), unrelated.parameters()):
            assert float((a - b).abs().max()) < 1e-9, (network, name)
            apart.append(float((a - c).abs().max()))
        assert max(apart) > 1e-3, network  # an unrelated seed draws other weights (batch norms start at 1 and 0 in both)
