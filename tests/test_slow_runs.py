"""Long end-to-end checks (`make test-slow`): the method's behaviour on a real offline scenario."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from huscf_lightning.callbacks import ClusteringRound
from huscf_lightning.cli.lightning_cli import run_cli

pytestmark = pytest.mark.slow


def test_clusters_recover_the_domains_after_warm_up(tmp_path: Path, monkeypatch) -> None:
    """Two domains, 8 non-IID clients: after the FedAvg warm-up the clusters are the domains (ARI 1)."""
    monkeypatch.chdir(tmp_path)
    cli = run_cli([
        "fit", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--model.rounds=4", "--model.local_epochs=1",
        "--model.evaluation.metrics=[]", "--model.evaluation.utility_samples=0", "--model.evaluation.sample_grids=false",
        "--data.domains=[{name: mnist5k, clients: 4, distribution: noniid}, {name: glyphs, clients: 4, distribution: noniid}]",
    ])
    (clustering,) = [c for c in cli.trainer.callbacks if isinstance(c, ClusteringRound)]
    after_warm_up = [row["ari"] for row in clustering.history if row["round"] > 2]
    assert after_warm_up and all(ari == pytest.approx(1.0) for ari in after_warm_up), clustering.history


def test_many_clients_with_partial_participation_complete_within_memory() -> None:
    """A smaller `bench/many_clients.py`: 200 clients, 10% a round; the store holds a few models, not 200."""
    bench = Path(__file__).resolve().parents[1] / "bench" / "many_clients.py"
    spec = importlib.util.spec_from_file_location("many_clients", bench)
    many_clients = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(many_clients)
    figures = many_clients.run(argparse.Namespace(
        clients=200, participation=0.1, batch=8, cap=16, rounds=2, width=0.5, accelerator="cpu", seed=0))
    assert figures["participants"] == 20 and figures["steps"] == 4  # 2 rounds x 2 batches of the 16-image cap
    assert figures["store_bytes_per_client"] < figures["resident_mb_per_participant"] * 1e6 / 10
    assert figures["peak_rss_gb"] < 12
