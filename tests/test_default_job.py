"""The packaged default job: still a HuSCF-GAN run, and one that trains a GAN whose samples are useful."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from huscf_lightning.callbacks import UtilityEvaluation
from huscf_lightning.cli.lightning_cli import run_cli

CONFIGS = Path(__file__).parents[1] / "configs"
# Half the default job's 20 rounds, no per-round scores or grids: the shorter version the slow test runs.
SHORT_RUN = [
    "fit", "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false",
    "--model.rounds=10", "--model.evaluation.metrics=[]", "--model.evaluation.sample_grids=false",
]


def _resolved(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    with pytest.raises(SystemExit) as exit_:
        run_cli(["fit", *args, "--print_config"])
    assert exit_.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_default_job_is_a_huscf_gan_run_on_lighter_networks(capsys: pytest.CaptureFixture) -> None:
    config = _resolved([], capsys)
    model, data = config["model"], config["data"]
    assert model["plan"]["source"] == "random"
    assert model["federation"]["mode"] == "kld_clustered" and model["federation"]["warmup_rounds"] == 2
    assert len(data["domains"]) == 2 and all(d["clients"] >= 2 for d in data["domains"])
    for net in ("generator", "discriminator"):
        assert model[net]["class_path"].startswith("huscf_lightning.nets.Reference")
        assert model[net]["init_args"]["width"] == 0.25


def test_paper_settings_keep_the_papers_networks_and_learning_rate(capsys: pytest.CaptureFixture) -> None:
    config = _resolved(["--config", str(CONFIGS / "paper.yaml"), "--config", str(CONFIGS / "scenarios/offline/offline3.yaml")], capsys)
    model = config["model"]
    assert model["generator"]["init_args"]["width"] == model["discriminator"]["init_args"]["width"] == 1.0
    assert (model["lr_g"], model["lr_d"]) == (2e-4, 2e-4)
    assert model["evaluation"]["every_n_rounds"] == 1


@pytest.mark.slow
def test_half_the_default_job_already_generates_useful_digits(tmp_path: Path, monkeypatch) -> None:
    """10 of the default job's 20 rounds (seed 0): a classifier trained only on generated digits reads real ones."""
    monkeypatch.chdir(tmp_path)
    cli = run_cli(SHORT_RUN)
    (utility,) = [c for c in cli.trainer.callbacks if isinstance(c, UtilityEvaluation)]
    accuracy = {row["domain"]: float(row["accuracy"]) for row in utility.results}
    assert accuracy["mnist5k"] >= 0.6, accuracy  # chance is 0.1
    assert accuracy["glyphs"] >= 0.3, accuracy
