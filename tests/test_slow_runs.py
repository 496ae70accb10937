"""Long end-to-end checks (`make test-slow`): the method's behaviour on a real offline scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from huscf_lightning.callbacks import ClusteringRound
from huscf_lightning.cli import run_cli

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
