"""`evaluate` rebuilds a run from its checkpoint alone: the networks from the arguments the checkpoint records
(a quarter-width run as the default job trains one), the data from the datamodule's saved hyperparameters."""

from __future__ import annotations

from pathlib import Path

import torch

from huscf_lightning.__main__ import main
from huscf_lightning.cli.lightning_cli import run_cli
from huscf_lightning.engine.saved_run import load_run

TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")


def test_evaluate_rebuilds_a_quarter_width_run_and_its_data_from_the_checkpoint(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", "--config", TINY, "--trainer.logger=false", "--model.rounds=1", "--model.evaluation.metrics=[]",
                   "--model.evaluation.utility_samples=0", "--model.evaluation.sample_grids=false",
                   "--model.generator=huscf_lightning.nets.ReferenceGenerator", "--model.generator.init_args.width=0.25",
                   "--model.discriminator=huscf_lightning.nets.ReferenceDiscriminator",
                   "--model.discriminator.init_args.width=0.25", f"--trainer.default_root_dir={tmp_path}"])
    (checkpoint,) = tmp_path.glob("**/last.ckpt")
    model, datamodule = load_run(str(checkpoint))
    assert model.generator_template.init_args["width"] == 0.25
    assert datamodule.client_domains == cli.datamodule.client_domains
    assert datamodule.client_sizes == cli.datamodule.client_sizes
    for key, value in cli.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert main(["evaluate", "--ckpt_path", str(checkpoint), "--samples", "50", "--epochs", "1"]) == 0
    assert "mnist5k" in capsys.readouterr().out
