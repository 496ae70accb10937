"""The privacy defences: masked aggregation hides what the server sums and changes nothing the clients end
with; noise and NoPeek change training only when on; a defence that cannot apply is refused before training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from huscf_lightning import FederationSpec, HuSCFGAN, PrivacySpec
from huscf_lightning.cli import run_cli
from huscf_lightning.errors import ConfigError
from huscf_lightning.federation.averaging import average_states
from huscf_lightning.privacy import masking
from huscf_lightning.privacy.noise import clip_and_noise, clip_factors
from huscf_lightning.privacy.nopeek import distance_correlation

TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")


# ----------------------------------------------------------------- masking, as pure functions
def _round(dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(6, 50, generator=generator, dtype=torch.float64).to(dtype)
    groups = torch.tensor([0, 1, 0, 2, 1, 0])
    sizes = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0, 1.0], dtype=torch.float64)
    matrix = torch.zeros(3, 6, dtype=torch.float64)
    for g in range(3):
        members = groups == g
        matrix[g, members] = sizes[members] / sizes[members].sum()
    return values, groups, matrix


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_masked_sums_are_unreadable_and_unmask_to_the_plain_average(dtype, tolerance) -> None:
    values, groups, matrix = _round(dtype)
    session = masking.MaskSession(masking.client_secret(0), round_index=3, network="D")
    columns = list(range(6))
    sent = masking.masked_contributions(session, values.double(), matrix, columns, groups, readable=False)
    sums = masking.server_sums(sent, groups, 3)
    expected = average_states({"w": values}, matrix)["w"]
    # what the server handles is neither a client's (encoded, weighted) value nor its group's average
    weighted = masking.encode(values.double() * matrix[groups, torch.arange(6)].unsqueeze(1))
    assert not (sent == weighted).any()
    assert not (sums == masking.encode(expected.double())).any()
    assert (masking.decode(sums, torch.float64) - expected.double()).abs().min() > 1.0  # not near it either
    got = masking.unmask_sums(session, sums, groups, readable=False, dtype=dtype)
    # exact: the masks cancel in integers, leaving the fixed-point sum of the unmasked contributions
    plain = masking.server_sums(weighted, groups, 3)
    assert torch.equal(got, masking.decode(plain, dtype))
    torch.testing.assert_close(got, expected, rtol=0, atol=tolerance)


def test_readable_masks_hide_each_client_but_give_the_server_the_sum() -> None:
    values, _, _ = _round(torch.float64)
    everyone = torch.zeros(6, dtype=torch.long)
    matrix = torch.full((1, 6), 1 / 6, dtype=torch.float64)
    session = masking.MaskSession(7, 1, "G")
    sent = masking.masked_contributions(session, values, matrix, list(range(6)), everyone, readable=True)
    assert not (sent == masking.encode(values / 6)).any()
    total = masking.decode(masking.server_sums(sent, everyone, 1), torch.float64)  # the server decodes it itself
    torch.testing.assert_close(total, values.mean(0, keepdim=True), rtol=0, atol=1e-12)


def test_masks_are_fresh_per_round_and_network_and_a_split_between_processes_gives_the_same_sum() -> None:
    values, groups, matrix = _round(torch.float64)
    a, b = masking.MaskSession(1, 1, "D"), masking.MaskSession(1, 2, "D")
    sent_a = masking.masked_contributions(a, values, matrix, list(range(6)), groups, False)
    sent_b = masking.masked_contributions(b, values, matrix, list(range(6)), groups, False)
    assert not (sent_a == sent_b).any()
    # two processes, each masking its own clients, add to what one process sends
    first = masking.masked_contributions(a, values[:2], matrix, [0, 1], groups, False)
    second = masking.masked_contributions(a, values[2:], matrix, [2, 3, 4, 5], groups, False)
    summed = masking.server_sums(first, groups[:2], 3) + masking.server_sums(second, groups[2:], 3)
    assert torch.equal(summed, masking.server_sums(sent_a, groups, 3))


def test_weights_across_groups_and_values_too_large_are_refused() -> None:
    _, groups, matrix = _round(torch.float64)
    swapped = torch.eye(6, dtype=torch.float64)[[1, 0, 3, 2, 5, 4]]
    with pytest.raises(masking.MaskingError, match="md_gan"):
        masking.check_within_groups(swapped, torch.arange(6))
    masking.check_within_groups(matrix, groups)
    with pytest.raises(masking.MaskingError, match="diverged"):
        masking.encode(torch.tensor([masking.LIMIT * 2]))


# ----------------------------------------------------------------- noise and NoPeek, as pure functions
def test_clipping_bounds_every_sample_and_the_noise_has_the_set_scale() -> None:
    x = torch.cat([torch.full((3, 100), 0.1), torch.full((3, 100), 5.0)])
    factors = clip_factors(x, clip=1.0)
    assert torch.equal(factors[:3], torch.ones(3))  # RMS 0.1 < 1: untouched
    torch.testing.assert_close((x * factors.unsqueeze(1)).norm(dim=1)[3:], torch.full((3,), 10.0))  # 1 * sqrt(100)
    noisy = clip_and_noise(torch.zeros(200, 1000), clip=0.5, multiplier=2.0, generator=torch.Generator().manual_seed(0))
    assert abs(float(noisy.std()) - 1.0) < 0.01  # std = multiplier * clip


def _distance_correlation_by_hand(x: torch.Tensor, z: torch.Tensor) -> float:
    n = x.shape[0]

    def centred(v: torch.Tensor) -> list[list[float]]:
        d = [[float((v[i] - v[j]).norm()) for j in range(n)] for i in range(n)]
        rows = [sum(r) / n for r in d]
        total = sum(rows) / n
        return [[d[i][j] - rows[i] - rows[j] + total for j in range(n)] for i in range(n)]

    a, b = centred(x), centred(z)
    mean = lambda p, q: sum(p[i][j] * q[i][j] for i in range(n) for j in range(n)) / n**2  # noqa: E731
    return math.sqrt(mean(a, b) / math.sqrt(mean(a, a) * mean(b, b)))


def test_distance_correlation_equals_the_hand_computation_and_has_finite_gradients() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    z = torch.randn(7, 4, generator=generator, dtype=torch.float64).requires_grad_()
    assert abs(float(distance_correlation(x, z.detach())) - _distance_correlation_by_hand(x, z.detach())) < 1e-12
    assert abs(float(distance_correlation(x, 3 * x + 1)) - 1.0) < 1e-12
    distance_correlation(x, z).backward()
    assert torch.isfinite(z.grad).all()


# ----------------------------------------------------------------- in training
def _fit(tmp: Path, name: str, *args: str):
    return run_cli(["fit", "--config", TINY, "--trainer.deterministic=true", f"--trainer.default_root_dir={tmp / name}",
                    "--trainer.logger=false", "--trainer.enable_checkpointing=false", "--model.rounds=2",
                    "--model.generator.init_args.width=0.25", "--model.discriminator.init_args.width=0.25",
                    "--model.evaluation.metrics=[]", "--model.evaluation.utility_samples=0",
                    "--model.evaluation.sample_grids=false", "--model.plan.source=random", *args])


def _weights(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize("precision,tolerance", [("64-true", 1e-12), ("32-true", 1e-6)])
def test_masked_aggregation_ends_with_the_weights_of_unmasked_aggregation(tmp_path, monkeypatch, precision, tolerance) -> None:
    monkeypatch.chdir(tmp_path)
    # one round that ends in a clustered KLD aggregation (several groups, so group masks are in play), then nothing
    # trains on: what is compared is the aggregation itself (later steps would amplify its rounding)
    args = (f"--trainer.precision={precision}", "--model.federation.mode=kld_clustered", "--model.rounds=1",
            "--model.federation.warmup_rounds=0")
    plain = _fit(tmp_path, "plain", *args)
    masked = _fit(tmp_path, "masked", *args, "--model.privacy.masked_aggregation=true")
    expected, got = _weights(plain), _weights(masked)
    assert expected.keys() == got.keys()
    worst = max(float((got[k] - v).abs().max()) for k, v in expected.items())
    assert 0 < worst < tolerance  # not bit-equal (fixed point): within its rounding
    (record,) = [c for c in masked.trainer.callbacks if type(c).__name__ == "FederatedAggregation"][0].history
    assert record["mode"] == "kld_clustered" and len(set(record["groups"])) > 1
    # the floating weights cross as int64: twice float32's bytes (less the integer counters), float64's as they are
    sent = [{cut: _exchange(cli)[f"wire/{cut}/up"] for cut in ("G.weights", "D.weights")} for cli in (plain, masked)]
    for cut, plain_bytes in sent[0].items():
        ratio = sent[1][cut] / plain_bytes
        assert (1.9 < ratio < 2.0) if precision == "32-true" else (0.99 < ratio <= 1.0), (cut, ratio)


def _exchange(cli) -> dict:
    (exchange,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "CutLayerExchange"]
    return exchange.history[-1]


def test_defences_off_train_bit_identically_and_each_defence_changes_training(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = _weights(_fit(tmp_path, "base"))
    off = _weights(_fit(tmp_path, "off", "--model.privacy.noise_multiplier=0", "--model.privacy.nopeek_weight=0",
                        "--model.privacy.masked_aggregation=false"))
    assert all(torch.equal(off[k], v) for k, v in base.items())
    for name, setting in (("noise", "--model.privacy.noise_multiplier=0.5"), ("nopeek", "--model.privacy.nopeek_weight=1.0")):
        changed = _weights(_fit(tmp_path, name, setting))
        assert any(not torch.equal(changed[k], v) for k, v in base.items()), name


@pytest.mark.parametrize("setting,mode,match", [
    ("--model.privacy.noise_multiplier=-1", "kld_clustered", "noise_multiplier must be a finite number >= 0"),
    ("--model.privacy.clip=0", "kld_clustered", "clip is the per-value RMS bound"),
    ("--model.privacy.masked_aggregation=true", "centralized", "averages no client blocks"),
    ("--model.privacy.masked_aggregation=true", "md_gan", "averages no client blocks"),
    ("--model.privacy.noise_multiplier=1", "fedgan", "splits no client's networks"),
    ("--model.privacy.nopeek_weight=1", "local", "splits no client's networks"),
])
def test_a_defence_that_cannot_apply_is_refused_before_a_run_exists(tmp_path, monkeypatch, setting, mode, match) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ConfigError, match=match):
        run_cli(["fit", "--config", TINY, f"--trainer.default_root_dir={tmp_path}", f"--model.federation.mode={mode}",
                 f"--trainer.logger.init_args.tracking_uri={uri}", setting])
    runs = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])
    assert runs == []
    assert not list(tmp_path.glob("**/*.ckpt"))


def test_the_module_refuses_a_defence_its_method_cannot_use() -> None:
    with pytest.raises(ConfigError, match="masked_aggregation"):
        HuSCFGAN(federation=FederationSpec(mode="local"), privacy=PrivacySpec(masked_aggregation=True))


def test_private_initialisation_gives_each_client_its_own_initial_blocks_and_leaves_the_servers(tmp_path) -> None:
    from huscf_lightning import PlanSpec

    def built(private: bool) -> HuSCFGAN:
        torch.manual_seed(0)
        model = HuSCFGAN(plan=PlanSpec(source="uniform", cut=[1, 1, 1, 1]), seed=5,
                         privacy=PrivacySpec(private_initialisation=private))
        model.configure_clients(["digits"] * 3, [16] * 3, progress_bar=False)
        return model

    shared, private = built(False), built(True)
    for name in ("G", "D"):
        plain, own = getattr(shared, name), getattr(private, name)
        heads = [own.client_state(c) for c in range(3)]
        key = next(k for k in heads[0] if heads[0][k].is_floating_point() and heads[0][k].dim() > 1)
        assert all(torch.equal(plain.client_state(c)[key], plain.client_state(0)[key]) for c in range(3))
        assert not torch.equal(heads[0][key], heads[1][key]) and not torch.equal(heads[0][key], plain.client_state(0)[key])
        for (k, a), b in zip(plain.server_blocks.state_dict().items(), own.server_blocks.state_dict().values()):
            assert torch.equal(a, b), k  # the server's own blocks keep the shared initialisation
    again = built(True)  # seeded: the same private weights for the same run seed
    assert all(torch.equal(a, b) for a, b in zip(private.D.state_dict().values(), again.D.state_dict().values()))
