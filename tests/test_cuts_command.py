"""The ``cuts`` command: table, JSON that recomputes to the same latency, exact vs GA."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from huscf_lightning.cli.cuts import add_arguments, run
from huscf_lightning.split.devices import ProfileError, parse_profiles
from huscf_lightning.split.latency import LatencyModel
from huscf_lightning.split.profile import GanProfile, NetworkProfile

PAPER_PROFILES = Path(__file__).parents[1] / "configs" / "profiles" / "paper.yaml"

SMALL = ["--clients", "9", "--population", "80", "--generations", "60"]


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(argv)) == 0
    return capsys.readouterr().out


def test_table_lists_every_profile_and_the_latency(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, ["--profiles", str(PAPER_PROFILES), *SMALL])
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("d")}
    assert sorted(rows) == [f"d{k}" for k in range(1, 8)]
    assert sum(int(r[1]) for r in rows.values()) == 9
    assert "modeled iteration latency:" in out and "G_forward" in out and "D_backward" in out


def test_json_recomputes_to_the_same_latency(capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(_run(capsys, [*SMALL, "--json", "--seed", "4"]))
    gan = GanProfile(
        NetworkProfile.from_dict(data["block_profiles"]["generator"]),
        NetworkProfile.from_dict(data["block_profiles"]["discriminator"]),
    )
    assert gan.generator.forward_flops[1] > 0 and gan.discriminator.output_bytes[0] == 64 * 64 * 14 * 14 * 4
    model = LatencyModel.build(gan, parse_profiles(data["device_profiles"]), data["client_profiles"])
    cuts = data["plan"]["cuts"]
    g = [model.generator.options.index((c["g_head"], c["g_tail"])) for c in cuts]
    d = [model.discriminator.options.index((c["d_head"], c["d_tail"])) for c in cuts]
    assert model.score(np.array([g]), np.array([d]))[0] == pytest.approx(data["latency_s"], rel=1e-12)
    assert sum(row["clients"] for row in data["per_profile"]) == 9
    assert data["breakdown"]["iteration_s"] == pytest.approx(data["latency_s"])


def test_exact_is_never_worse_than_the_ga_and_matches_it_here(capsys: pytest.CaptureFixture[str]) -> None:
    ga = json.loads(_run(capsys, [*SMALL, "--json"]))
    exact = json.loads(_run(capsys, [*SMALL, "--json", "--exact"]))
    assert exact["method"].startswith("exact")
    assert exact["latency_s"] <= ga["latency_s"] + 1e-12
    assert ga["latency_s"] == pytest.approx(exact["latency_s"], rel=1e-12)


def test_explicit_assignment_shorter_than_the_clients_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ProfileError, match="2 entries but there are 9 clients"):
        _run(capsys, [*SMALL, "--assignment", "d1,d2"])


def test_progress_bar_ticks_once_a_generation_on_stderr_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args([*SMALL, "--progress"])) == 0
    assert "GA:" in capsys.readouterr().err
    assert run(parser.parse_args([*SMALL, "--no-progress"])) == 0
    assert "GA:" not in capsys.readouterr().err
    assert run(parser.parse_args(SMALL)) == 0  # default: a bar only on a terminal, and pytest's stderr is none
    assert "GA:" not in capsys.readouterr().err
