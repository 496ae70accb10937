"""Generation score, utility metrics and the evaluation callbacks."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from huscf_lightning.callbacks import default_callbacks
from huscf_lightning.callbacks.evaluation import GenerationEvaluation, UtilityEvaluation
from huscf_lightning.callbacks.round import run_round_end
from huscf_lightning.config import EvaluationSpec, FederationSpec
from huscf_lightning.data import load_domain
from huscf_lightning.data.datamodule import HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.errors import ConfigError
from huscf_lightning.federation.rounds import RoundState
from huscf_lightning.metrics import (
    UTILITY_METRICS,
    UnknownMetricError,
    classification_metrics,
    domain_client,
    domain_generation_score,
    evaluate_utility,
    format_utility_table,
    generate_uniform,
    generation_score,
    utility_csv,
)


# ----------------------------------------------------------------------------- generation score
def test_score_is_num_classes_for_balanced_confident_samples() -> None:
    probs = torch.eye(10).repeat(50, 1)
    assert generation_score(probs) == pytest.approx(10.0, abs=1e-9)


def test_score_is_one_for_a_constant_classifier() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1]]).repeat(40, 1)
    assert generation_score(probs) == pytest.approx(1.0, abs=1e-9)


def test_score_matches_a_hand_computation() -> None:
    # marginal (0.75, 0.25); KL rows: 0.5 ln(4/3) and ln(4/3); mean 0.75 ln(4/3)
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    assert generation_score(probs) == pytest.approx((4 / 3) ** 0.75, rel=1e-12)


def test_score_rejects_logits() -> None:
    with pytest.raises(ValueError, match="softmax"):
        generation_score(torch.tensor([[2.0, -1.0], [0.5, 0.3]]))


class PixelReader(nn.Module):
    """A classifier that reads the class off the top-left pixel: perfect on `label_images`."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return 50.0 * nn.functional.one_hot(x[:, 0, 0, 0].long(), self.num_classes).float()


def label_images(labels: Tensor) -> Tensor:
    return labels.float().view(-1, 1, 1, 1).expand(-1, 1, 28, 28).clone()


def test_domain_score_of_a_perfect_generator_and_classifier_is_ten() -> None:
    score = domain_generation_score(PixelReader(10), label_images, num_samples=1000, num_classes=10, batch_size=128)
    assert score == pytest.approx(10.0, rel=1e-6)


def test_domain_score_of_a_collapsed_generator_is_one() -> None:
    def collapsed(labels: Tensor) -> Tensor:
        return label_images(torch.full_like(labels, 3))

    assert domain_generation_score(PixelReader(10), collapsed, num_samples=500) == pytest.approx(1.0, abs=1e-6)


def test_generated_labels_are_balanced_and_images_follow_them() -> None:
    images, labels = generate_uniform(label_images, num_samples=1003, num_classes=10, batch_size=100, seed=3)
    counts = torch.bincount(labels, minlength=10)
    assert counts.sum() == 1003 and counts.max() - counts.min() <= 1
    assert torch.equal(images[:, 0, 0, 0].long(), labels)


# ----------------------------------------------------------------------------- utility metrics
CONFUSION = [[3, 1, 0], [1, 2, 1], [2, 0, 3]]  # rows: true class, columns: predicted class


def confusion_to_labels(matrix: list[list[int]]) -> tuple[Tensor, Tensor]:
    target, preds = [], []
    for true, row in enumerate(matrix):
        for pred, count in enumerate(row):
            target += [true] * count
            preds += [pred] * count
    return torch.tensor(preds), torch.tensor(target)


def test_classification_metrics_equal_a_hand_computation() -> None:
    preds, target = confusion_to_labels(CONFUSION)
    got = classification_metrics(preds, target, num_classes=3)
    precision = [3 / 6, 2 / 3, 3 / 4]  # diagonal / column sums
    recall = [3 / 4, 2 / 4, 3 / 5]  # diagonal / row sums
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    fpr = [3 / (3 + 6), 1 / (1 + 8), 1 / (1 + 7)]  # FP = column sum - diagonal, TN = 13 - row - FP
    assert got["accuracy"] == pytest.approx(8 / 13)
    assert got["precision"] == pytest.approx(sum(precision) / 3)
    assert got["recall"] == pytest.approx(sum(recall) / 3)
    assert got["f1"] == pytest.approx(sum(f1) / 3)
    assert got["fpr"] == pytest.approx(sum(fpr) / 3)


def test_perfect_predictions_give_ones_and_zero_fpr() -> None:
    target = torch.arange(30) % 5
    assert classification_metrics(target, target, 5) == pytest.approx(
        {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "fpr": 0.0}
    )


def test_utility_table_and_csv() -> None:
    rows = [{"domain": "digits", "client": 0, "accuracy": 0.5, "precision": 0.25, "recall": 1.0, "f1": 0.4, "fpr": 0.1}]
    assert utility_csv(rows).splitlines() == [
        "domain,client,accuracy,precision,recall,f1,fpr",
        "digits,0,0.5,0.25,1.0,0.4,0.1",
    ]
    last_line = format_utility_table(rows).splitlines()[-1]
    assert last_line.split() == ["digits", "0.5000", "0.2500", "1.0000", "0.4000", "0.1000"]


# ----------------------------------------------------------------------------- callbacks
GLYPHS_SMALL = {"train_per_class": 150, "test_per_class": 40}


class ReplayGAN(pl.LightningModule):
    """HuSCFGAN's evaluation interface over a generator of known quality, to check metric values.

    A client "generates" real training images of its domain for the requested labels, or uniform
    noise if it is in ``noise_clients``. One epoch is one round.
    """

    def __init__(
        self, client_domains: list[str], images: dict[str, tuple[Tensor, list[Tensor]]], noise_clients: tuple = ()
    ) -> None:
        super().__init__()
        self.noise_clients = noise_clients
        self.client_domains = client_domains
        self.domain_names = list(dict.fromkeys(client_domains))
        self.num_classes = 10
        self.images = images
        self.weight = nn.Parameter(torch.zeros(1))

    def is_round_end(self, trainer: pl.Trainer) -> bool:
        return True

    @property
    def current_round(self) -> int:
        return self.trainer.current_epoch + 1

    def on_train_epoch_end(self) -> None:
        """Every epoch is a round: open it and run the round callbacks, as HuSCFGAN does."""
        round_state = RoundState(self.current_round, self.client_domains, [1] * len(self.client_domains))
        run_round_end(self.trainer, self, round_state)

    @torch.no_grad()
    def generate(self, client: int, labels: Tensor, z: Tensor | None = None) -> Tensor:
        draw = torch.rand(len(labels))  # consumes the global RNG, like a generator's noise
        if client in self.noise_clients:
            return draw.view(-1, 1, 1, 1).expand(-1, 1, 28, 28) * 2 - 1
        images, by_label = self.images[self.client_domains[client]]
        picks = (draw * 100).long()
        return torch.stack([images[by_label[int(y)][int(i)]] for y, i in zip(labels, picks)])

    def training_step(self, batch, batch_idx):
        return (self.weight - batch[0].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class DomainsDataModule(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        glyphs = load_domain("glyphs", options=GLYPHS_SMALL)
        self.domains = {"digits": load_domain("digits"), "glyphs": glyphs}

    def domain_data(self, name: str):
        return self.domains[name]

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 1)), batch_size=4)


@pytest.fixture(scope="module")
def replay_setup():
    datamodule = DomainsDataModule()
    images = {}
    for name, data in datamodule.domains.items():
        by_label = [torch.nonzero(data.train_labels == c).flatten()[:100] for c in range(10)]
        images[name] = (data.train_images, by_label)
    return datamodule, images


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory):
    """One classifier cache for the module: each domain's classifier is trained once."""
    return tmp_path_factory.mktemp("classifiers")


def test_domain_client_is_the_first_client_of_the_domain() -> None:
    assert domain_client(["a", "b", "b", "a"], "b") == 1
    with pytest.raises(ValueError, match="No client holds domain 'c'"):
        domain_client(["a", "b"], "c")


def test_unknown_metric_is_a_clear_error_at_construction() -> None:
    with pytest.raises(UnknownMetricError, match=r"\['fdi'\].*'score', 'fid', 'kid'"):
        GenerationEvaluation(EvaluationSpec(metrics=["score", "fdi"]))


def test_evaluation_callbacks_check_their_spec_at_construction(tmp_path) -> None:
    with pytest.raises(ConfigError, match="num_samples >= 2"):
        GenerationEvaluation(EvaluationSpec(num_samples=1))
    with pytest.raises(ConfigError, match="at least one metric"):
        GenerationEvaluation(EvaluationSpec(metrics=[]))
    with pytest.raises(ConfigError, match="is not a file"):
        GenerationEvaluation(EvaluationSpec(metrics=["fid"], inception_weights=str(tmp_path / "missing.pt")))
    with pytest.raises(ConfigError, match="utility_samples >= 1"):
        UtilityEvaluation(EvaluationSpec(utility_samples=0))


def test_default_callbacks_hand_the_module_its_evaluation_spec_whole() -> None:
    spec = EvaluationSpec(metrics=["score", "kid"], every_n_rounds=3, num_samples=64, utility_samples=10)
    model = HuSCFGAN(rounds=2, local_epochs=1, federation=FederationSpec(mode="fedavg"), evaluation=spec, seed=7)
    by_kind = {type(c): c for c in default_callbacks(model)}
    generation, utility_callback = by_kind[GenerationEvaluation], by_kind[UtilityEvaluation]
    assert generation.spec is spec and utility_callback.spec is spec
    assert generation.every_n_rounds == 3 and generation.metrics == ["score", "kid"] and generation.seed == 7
    assert utility_callback.seed == 7


def test_generation_evaluation_logs_scores_per_round_and_survives_checkpoints(
    replay_setup, classifier_cache, tmp_path
) -> None:
    datamodule, images = replay_setup
    model = ReplayGAN(["digits", "glyphs"], images)
    evaluation = GenerationEvaluation(
        EvaluationSpec(num_samples=300, metrics=["score", "fid"], classifier_cache=str(classifier_cache)),
        classifier_epochs=2,
    )
    csv_logger = pl.loggers.CSVLogger(tmp_path, name="run")
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[evaluation], logger=csv_logger, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=datamodule)

    assert [row["round"] for row in evaluation.history] == [1, 2]
    last = evaluation.history[-1]
    for domain in ("digits", "glyphs"):
        assert 3.0 < last[f"eval/score/{domain}"] <= 10.0  # real images; a noise generator scores about 1
        assert last[f"eval/fid/{domain}"] < 50.0
    assert last["eval/score_mean"] == pytest.approx((last["eval/score/digits"] + last["eval/score/glyphs"]) / 2)
    assert last["eval/seconds"] > 0
    assert float(trainer.callback_metrics["eval/score/digits"]) == pytest.approx(last["eval/score/digits"])
    logged = (tmp_path / "run" / "version_0" / "metrics.csv").read_text()
    assert "eval/score/glyphs" in logged and "eval/classifier_accuracy/digits" in logged

    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    restored = GenerationEvaluation(EvaluationSpec(metrics=["score", "fid"]))
    restored.load_state_dict(torch.load(checkpoint, weights_only=False)["callbacks"][restored.state_key])
    assert restored.history == evaluation.history


def test_generation_score_separates_a_good_and_a_noise_generator(replay_setup, classifier_cache) -> None:
    datamodule, images = replay_setup
    evaluation = GenerationEvaluation(
        EvaluationSpec(num_samples=200, classifier_cache=str(classifier_cache)), classifier_epochs=2
    )
    model = ReplayGAN(["digits", "glyphs"], images)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=datamodule)
    rng_before = torch.get_rng_state()
    good = evaluation.evaluate(trainer, model)["eval/score/digits"]
    assert torch.equal(torch.get_rng_state(), rng_before)  # evaluation noise comes from a forked RNG
    noise = ReplayGAN(["glyphs", "digits"], images, noise_clients=(1,))  # digits judged through client 1
    bad = evaluation.evaluate(trainer, noise)["eval/score/digits"]
    assert good > 3.0 and bad < 2.0


def test_utility_of_real_images_is_high_and_of_noise_is_chance(replay_setup) -> None:
    datamodule, images = replay_setup
    rows = evaluate_utility(ReplayGAN(["digits", "glyphs"], images), datamodule.domain_data, num_samples=1000, epochs=3)
    assert [row["domain"] for row in rows] == ["digits", "glyphs"]
    assert all(row["accuracy"] > 0.7 and row["fpr"] < 0.04 for row in rows), rows  # chance: 0.1 and 0.1
    noise_model = ReplayGAN(["glyphs", "digits"], images, noise_clients=(1,))
    noise_rows = evaluate_utility(noise_model, datamodule.domain_data, num_samples=300, epochs=1)
    digits = next(row for row in noise_rows if row["domain"] == "digits")
    assert digits["accuracy"] < 0.3 and digits["client"] == 1


def test_callbacks_with_the_real_huscfgan(classifier_cache, tmp_path, caplog) -> None:
    datamodule = HuSCFDataModule(
        [{"name": "digits", "clients": 1}, {"name": "glyphs", "clients": 2, "options": GLYPHS_SMALL}],
        batch_size=16,
        cap=32,
    )
    model = HuSCFGAN(
        rounds=2,
        local_epochs=1,
        federation=FederationSpec(mode="fedavg"),
        evaluation=EvaluationSpec(sample_grids=False),
    )
    generation = GenerationEvaluation(
        EvaluationSpec(every_n_rounds=2, num_samples=100, classifier_cache=str(classifier_cache)), classifier_epochs=2
    )
    utility_callback = UtilityEvaluation(EvaluationSpec(utility_samples=100, utility_epochs=1))
    trainer = pl.Trainer(
        max_epochs=model.max_epochs, callbacks=[generation, utility_callback],
        logger=pl.loggers.CSVLogger(tmp_path, name="run"), enable_progress_bar=False, enable_checkpointing=False,
    )
    with caplog.at_level("INFO", logger="huscf_lightning.callbacks.evaluation"):
        trainer.fit(model, datamodule=datamodule)

    # the user's own instances are kept (not replaced by the module's) and run after aggregation
    kinds = [type(c).__name__ for c in trainer.callbacks]
    assert kinds.count("GenerationEvaluation") == 1 and generation in trainer.callbacks
    assert kinds.index("FederatedAggregation") < kinds.index("GenerationEvaluation") < kinds.index("UtilityEvaluation")
    assert [row["round"] for row in generation.history] == [2]  # every second round only
    assert [(row["domain"], row["client"]) for row in utility_callback.results] == [("digits", 0), ("glyphs", 1)]
    assert "utility of generated data" in caplog.text
    # what the logger received is what the callbacks computed
    with open(tmp_path / "run" / "version_0" / "metrics.csv", newline="") as handle:
        logged: dict[str, float] = {}
        for row in csv.DictReader(handle):
            logged.update({key: float(value) for key, value in row.items() if value not in ("", None)})
    for domain in ("digits", "glyphs"):
        assert logged[f"eval/score/{domain}"] == pytest.approx(generation.history[0][f"eval/score/{domain}"])
    for row in utility_callback.results:
        for name in UTILITY_METRICS:
            assert logged[f"utility/{name}/{row['domain']}"] == pytest.approx(row[name])
    assert logged["eval/seconds"] > 0 and logged["utility/seconds"] > 0


def test_mlflow_run_gets_the_score_curves_and_utility_artifacts(replay_setup, classifier_cache, tmp_path) -> None:
    datamodule, images = replay_setup
    logger = pl.loggers.MLFlowLogger(experiment_name="eval", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[
            GenerationEvaluation(
                EvaluationSpec(num_samples=100, classifier_cache=str(classifier_cache)), classifier_epochs=2
            ),
            UtilityEvaluation(EvaluationSpec(utility_samples=200, utility_epochs=1)),
        ],
        logger=logger,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(ReplayGAN(["digits", "glyphs"], images), datamodule=datamodule)
    client = logger.experiment
    artifacts = {item.path for item in client.list_artifacts(logger.run_id)}
    assert {"score_curves.png", "generation_scores.json", "utility.csv"} <= artifacts
    history = client.get_metric_history(logger.run_id, "eval/score/digits")
    assert sorted(point.step for point in history) == [1, 2]
    assert client.get_metric_history(logger.run_id, "utility/accuracy/glyphs")[0].step == 2
