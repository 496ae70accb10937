"""notebooks/compare_runs.ipynb runs against a small MLflow store and draws its figures and the right front."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "compare_runs.ipynb"


def _store(uri: str) -> None:
    """Two training runs with per-round scores, and a two-objective sweep of four trials."""
    client = MlflowClient(uri)
    experiment = client.create_experiment("nb")
    for name, base in (("run-a", 1.0), ("run-b", 2.0)):
        run = client.create_run(experiment, run_name=name).info.run_id
        metrics = [
            Metric(f"eval/score/{domain}", base + shift + step, 0, step)
            for step in (1, 2, 3)
            for domain, shift in (("mnist5k", 0.0), ("glyphs", 0.5))
        ]
        client.log_batch(run, metrics=metrics)
        client.set_terminated(run)
    sweep = client.create_run(experiment, run_name="sweep-demo", tags={"sweep.objectives": "fid,latency"}).info.run_id
    # (fid, latency): trial 2 is dominated by trial 1 (worse in both); 0, 1 and 3 form the front.
    for number, (fid, latency) in enumerate([(10.0, 1.0), (5.0, 2.0), (6.0, 3.0), (2.0, 4.0)]):
        tags = {MLFLOW_PARENT_RUN_ID: sweep, "sweep.trial": str(number)}
        trial = client.create_run(experiment, run_name=f"demo-trial-{number}", tags=tags).info.run_id
        client.log_param(trial, "model.federation.k", number + 1)
        client.log_batch(trial, metrics=[Metric("objective/fid", fid, 0, 0), Metric("objective/latency", latency, 0, 0)])
        client.set_terminated(trial)
    client.set_terminated(sweep)


def test_notebook_plots_score_curves_and_the_sweep_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _store(uri)
    monkeypatch.setenv("HUSCF_TRACKING_URI", uri)
    monkeypatch.setenv("HUSCF_EXPERIMENT", "nb")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 2  # the score curves and the sweep's front
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "7 runs in 1 experiment(s)" in text
    assert "Pareto front of 4 trials" in text
    front = sorted(line.split()[0] for line in text.splitlines() if line.strip().startswith("demo-trial-"))
    assert front == ["demo-trial-0", "demo-trial-1", "demo-trial-3"]
