"""The data module: one batch per client per step, epoch = longest client, loaders built once, resumable."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from huscf_lightning.data import DomainError, DomainSpec, HuSCFDataModule, PartitionError
from huscf_lightning.data.datamodule import ShuffledBatches
from huscf_lightning.data.loaders import FASHION_MNIST_DEBIAN_ROOT

SCENARIOS = Path(__file__).resolve().parents[1] / "configs" / "scenarios"
SMALL_GLYPHS = {"train_per_class": 30, "test_per_class": 2}


def small_module(**overrides) -> HuSCFDataModule:
    arguments = dict(
        domains=[
            DomainSpec("digits", 3, "noniid"),
            DomainSpec("glyphs", 2, "highly_noniid", options=SMALL_GLYPHS),
        ],
        batch_size=16,
        seed=0,
        cap=120,
    )
    arguments.update(overrides)
    return HuSCFDataModule(**arguments)


def epoch_batches(module: HuSCFDataModule) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    return [batch for batch, _, _ in module.train_dataloader()]


def fingerprints(images: torch.Tensor) -> list[bytes]:
    return sorted(image.numpy().tobytes() for image in images)


def test_setup_exposes_the_scenario_and_is_idempotent() -> None:
    module = small_module()
    module.setup()
    partitions = module.partitions
    module.setup("fit")
    assert module.partitions is partitions
    assert module.client_domains == ["digits"] * 3 + ["glyphs"] * 2
    assert module.domain_names == ["digits", "glyphs"] and module.num_classes == 10 and module.num_clients == 5
    assert module.client_sizes == [part.size for part in partitions] and max(module.client_sizes) <= 120
    assert module.domain_data("glyphs").train_images.shape == (300, 1, 28, 28)
    assert [row["size"] for row in module.partition_rows()] == module.client_sizes
    for client, part in enumerate(partitions):
        images, labels = module.client_data(client)
        domain = module.domain_data(part.domain)
        assert torch.equal(images, domain.train_images[part.indices]) and torch.equal(labels, domain.train_labels[part.indices])


def test_each_step_holds_one_batch_per_client_and_an_epoch_lasts_the_longest_client() -> None:
    module = small_module()
    module.setup()
    steps = epoch_batches(module)
    longest = max(range(module.num_clients), key=lambda client: module.client_sizes[client])
    expected_steps = -(-module.client_sizes[longest] // 16)  # ceil, the leftover here is > 1
    assert module.client_sizes[longest] % 16 != 1
    assert len(steps) == expected_steps == module.steps_per_epoch() == len(module.train_dataloader())
    for batch in steps:
        assert len(batch) == module.num_clients
        for client, (images, labels) in enumerate(batch):
            assert images.shape[1:] == (1, 28, 28) and 2 <= len(images) <= 16 and labels.dtype == torch.int64
            assert set(labels.tolist()).isdisjoint(module.partitions[client].dropped_labels)
    # The longest client sees each of its images exactly once per epoch.
    seen = torch.cat([batch[longest][0] for batch in steps])
    assert fingerprints(seen) == fingerprints(module.client_data(longest)[0])


def test_loaders_are_built_once_and_reshuffle_every_epoch() -> None:
    module = small_module()
    module.setup()
    loader = module.train_dataloader()
    assert module.train_dataloader() is loader
    first, second = epoch_batches(module), epoch_batches(module)
    assert module.train_dataloader() is loader and len(first) == len(second)
    assert not torch.equal(first[0][0][1], second[0][0][1])


def test_same_seed_same_batches_other_seed_differs() -> None:
    runs = []
    for seed in (4, 4, 5):
        module = small_module(seed=seed)
        module.setup()
        runs.append(epoch_batches(module)[0][0][1])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_shuffled_batches_leave_out_only_a_lone_leftover() -> None:
    generator = torch.Generator().manual_seed(0)
    assert [len(batch) for batch in ShuffledBatches(65, 64, generator)] == [64]
    assert [len(batch) for batch in ShuffledBatches(66, 64, generator)] == [64, 2]
    assert sorted(torch.cat(list(ShuffledBatches(66, 64, generator))).tolist()) == list(range(66))
    assert len(ShuffledBatches(129, 64, generator)) == 2 and len(ShuffledBatches(20, 64, generator)) == 1


@pytest.mark.parametrize("load_before_setup", [False, True])
def test_state_dict_resumes_the_same_batches(load_before_setup: bool) -> None:
    original = small_module()
    original.setup()
    epoch_batches(original)
    state = original.state_dict()
    expected = epoch_batches(original)
    resumed = small_module()
    if load_before_setup:
        resumed.load_state_dict(state)
        resumed.setup()
    else:
        resumed.setup()
        resumed.load_state_dict(state)
    for step, batch in zip(expected, epoch_batches(resumed), strict=True):
        for (images, labels), (again_images, again_labels) in zip(step, batch, strict=True):
            assert torch.equal(images, again_images) and torch.equal(labels, again_labels)


class RecordingModule(pl.LightningModule):
    """Records what each training step receives; no optimisation needed to test the data path."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.steps: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.steps.append([len(images) for images, _ in batch])

    def configure_optimizers(self):
        return None


def test_lightning_trainer_feeds_one_batch_per_client_per_step() -> None:
    module = small_module()
    recorder = RecordingModule()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(recorder, datamodule=module)
    assert len(recorder.steps) == 2 * module.steps_per_epoch()
    assert all(len(sizes) == module.num_clients for sizes in recorder.steps)
    longest = max(range(module.num_clients), key=lambda client: module.client_sizes[client])
    assert sum(sizes[longest] for sizes in recorder.steps) == 2 * module.client_sizes[longest]


def test_config_yaml_parses_into_domain_specs() -> None:
    parser = ArgumentParser(parser_mode="omegaconf")
    parser.add_class_arguments(HuSCFDataModule, "data")
    config = parser.parse_object(
        yaml.safe_load(
            """
            data:
              domains:
                - {name: digits, clients: 3, distribution: noniid}
                - {name: glyphs, clients: 2, options: {train_per_class: 30, test_per_class: 2}}
              batch_size: 16
              cap: 120
            """
        )
    )
    module = parser.instantiate(config).data
    assert module.domains == [DomainSpec("digits", 3, "noniid"), DomainSpec("glyphs", 2, options=SMALL_GLYPHS)]
    assert module.batch_size == 16 and module.cap == 120 and module.seed == 0


def test_scenario_files_hold_only_data_and_match_the_paper() -> None:
    clients = {}
    for path in sorted(SCENARIOS.glob("*/*.yaml")):
        content = yaml.safe_load(path.read_text())
        assert list(content) == ["data"], path.name
        HuSCFDataModule(**{**content["data"], "domains": [DomainSpec(**entry) for entry in content["data"]["domains"]]})
        clients[path.stem] = [(entry["name"], entry["clients"], entry["distribution"]) for entry in content["data"]["domains"]]
    assert sorted(clients) == (
        [f"offline{i}" for i in range(1, 7)] + ["real1", "real4", "real6"] + [f"scenario{i}" for i in range(1, 7)]
    )
    assert clients["real6"] == [(name, 4, "iid") for name in ("mnist", "fashion_mnist", "kmnist", "glyphs")]
    assert clients["scenario6"] == [(name, 20, "iid") for name in ("mnist", "fashion_mnist", "kmnist", "notmnist")]
    assert [entry[2] for entry in clients["scenario5"]] == ["highly_noniid"] * 2
    offline_names = {name for stem, entries in clients.items() if stem.startswith("offline") for name, _, _ in entries}
    assert offline_names == {"mnist5k", "fashion_mnist", "glyphs", "digits"}


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DEBIAN_ROOT, "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Debian's dataset-fashion-mnist is not installed ({FASHION_MNIST_DEBIAN_ROOT} is missing); "
    "`apt-get install dataset-fashion-mnist` to run this test",
)
def test_offline_twin_of_scenario6_sets_up() -> None:
    data = yaml.safe_load((SCENARIOS / "offline" / "offline6.yaml").read_text())["data"]
    module = HuSCFDataModule(**{**data, "domains": [DomainSpec(**entry) for entry in data["domains"]]})
    module.setup()
    assert module.domain_names == ["mnist5k", "fashion_mnist", "glyphs", "digits"]
    assert module.client_sizes == [350] * 16


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PartitionError, match="Unknown data distribution"):
        HuSCFDataModule([DomainSpec("digits", 2, "pathological")])
    with pytest.raises(PartitionError, match="more than once"):
        HuSCFDataModule([DomainSpec("digits", 2), DomainSpec("digits", 3)])
    with pytest.raises(PartitionError, match="batch_size"):
        HuSCFDataModule([DomainSpec("digits", 2)], batch_size=1)
    with pytest.raises(PartitionError, match="Unknown cap rule 'half'"):
        HuSCFDataModule([DomainSpec("digits", 2)], cap="half")
    with pytest.raises(PartitionError, match="empty"):
        HuSCFDataModule([])
    with pytest.raises(PartitionError, match="Known keys"):
        HuSCFDataModule([{"name": "digits", "clients": 2, "distributon": "iid"}])
    with pytest.raises(PartitionError, match="at least 1 client"):
        HuSCFDataModule([{"name": "digits", "clients": "2"}])
    with pytest.raises(DomainError, match="Unknown domain 'svhn'"):
        HuSCFDataModule([DomainSpec("svhn", 2)]).setup()
    with pytest.raises(DomainError, match="apt-get install dataset-fashion-mnist"):
        HuSCFDataModule([DomainSpec("fashion_mnist", 2, root=str(tmp_path))]).setup()
    with pytest.raises(PartitionError, match="1437 training images but 5000 clients"):
        HuSCFDataModule([DomainSpec("digits", 5000)]).setup()
    with pytest.raises(PartitionError, match="fewer than 2 images"):
        HuSCFDataModule([DomainSpec("digits", 1000)], cap="none").setup()
    with pytest.raises(RuntimeError, match="call datamodule.setup"):
        _ = HuSCFDataModule([DomainSpec("digits", 2)]).client_sizes


def test_a_batch_larger_than_a_client_is_an_error_naming_the_client_and_the_fix() -> None:
    # digits: 2 clients of 718 images; glyphs: 300 images over 12 clients, 25 each, below the batch of 32.
    module = HuSCFDataModule([DomainSpec("digits", 2), DomainSpec("glyphs", 12, options=SMALL_GLYPHS)], batch_size=32, cap="none")
    with pytest.raises(PartitionError) as error:
        module.setup()
    message = str(error.value)
    assert "data.batch_size is 32 but 12 client(s) hold fewer images: client 2 (glyphs) holds 25," in message
    assert "client 9 (glyphs) holds 25 and 4 more" in message and "(digits)" not in message
    assert "Lower data.batch_size to at most 25" in message and "larger cap" in message and "\n" not in message
    at_the_limit = HuSCFDataModule([DomainSpec("glyphs", 12, options=SMALL_GLYPHS)], batch_size=25, cap="none")
    at_the_limit.setup()
    assert [len(images) for images, _ in next(iter(at_the_limit.train_dataloader()))[0]] == [25] * 12


def test_the_paper_settings_layer_under_a_scenario(capsys: pytest.CaptureFixture) -> None:
    """configs/paper.yaml + a scenario file = the paper's run: its model settings and the scenario's data."""
    from huscf_lightning.cli.lightning_cli import run_cli

    with pytest.raises(SystemExit) as exit_:
        run_cli(["fit", "--config", str(SCENARIOS.parent / "paper.yaml"), "--config", str(SCENARIOS / "paper" / "scenario6.yaml"),
                 "--print_config"])
    assert exit_.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model, data = config["model"], config["data"]
    assert (model["rounds"], model["local_epochs"]) == (50, 5)
    assert model["plan"]["source"] == "ga" and model["federation"]["mode"] == "kld_clustered"
    assert model["federation"]["warmup_rounds"] == 2 and model["federation"]["alpha"] == 1.0
    evaluation = model["evaluation"]
    assert (evaluation["num_samples"], evaluation["utility_samples"], evaluation["utility_epochs"]) == (5000, 30000, 15)
    assert (data["batch_size"], data["cap"], data["scenario"]) == (64, "paper", "scenario6")
    assert [(d["name"], d["clients"]) for d in data["domains"]] == [
        ("mnist", 20), ("fashion_mnist", 20), ("kmnist", 20), ("notmnist", 20)
    ]
