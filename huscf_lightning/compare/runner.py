"""Running a comparison: every cell a fit in this process, logged as an MLflow child run of one parent
run found by the comparison's name, so an interrupted comparison resumes and skips finished cells.

In-process fits share the loaded domains and the trained domain classifiers (their cache folder),
so only the first cell pays for them.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from huscf_lightning.cli.lightning_cli import run_cli
from huscf_lightning.compare.charts import metric_figures, tradeoff_figure
from huscf_lightning.compare.prepare import PreparedComparison, prepare
from huscf_lightning.compare.spec import Cell, CompareSpec
from huscf_lightning.compare.table import (
    METRICS,
    PRIVACY_METRICS,
    Row,
    cell_values,
    csv_table,
    markdown_table,
    summarize,
)
from huscf_lightning.engine.saved_run import load_run
from huscf_lightning.engine.tracking import check_tracking_uri, open_experiment
from huscf_lightning.privacy.attacks.record import (
    ATTACKS_VERSION,
    VERSION_TAG,
    attack_run,
    log_leakage_to,
    logged_checkpoint,
)

log = logging.getLogger(__name__)

NAME_TAG = "compare.name"
CELL_TAG = "compare.cell"
FINGERPRINT_TAG = "compare.fingerprint"


@dataclass(frozen=True)
class CellOutcome:
    """What became of one cell: ``finished`` now, ``skipped`` (finished by an earlier session) or ``failed``."""

    cell: Cell
    state: str
    run_id: str
    seconds: float
    error: str | None = None


@dataclass(frozen=True)
class ComparisonResult:
    """A comparison's MLflow parent run, every cell's outcome and the table."""

    parent_run_id: str
    tracking_uri: str
    experiment_name: str
    outcomes: list[CellOutcome]
    rows: list[Row]
    markdown: str
    csv: str

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def _parent_run(client: MlflowClient, experiment_id: str, spec: CompareSpec) -> str:
    """The comparison's run: the newest top-level run tagged with its name, else a new one."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{NAME_TAG}` = {_quoted(spec.name)}", order_by=["attributes.start_time DESC"]
    )
    parents = [r for r in found if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    if parents:
        run_id = parents[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        log.info("resuming comparison run %s", run_id)
        return run_id
    return client.create_run(experiment_id, run_name=f"compare-{spec.name}", tags={NAME_TAG: spec.name}).info.run_id


def _finished_children(client: MlflowClient, experiment_id: str, parent: str) -> dict[tuple[str, str], Run]:
    """The newest FINISHED child run of each (cell, fingerprint); children left RUNNING by an interruption are
    marked KILLED."""
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = {_quoted(parent)}",
        order_by=["attributes.start_time DESC"],
    )
    finished: dict[tuple[str, str], Run] = {}
    for run in children:
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
        elif run.info.status == "FINISHED" and CELL_TAG in run.data.tags:
            finished.setdefault((run.data.tags[CELL_TAG], run.data.tags.get(FINGERPRINT_TAG, "")), run)
    return finished


def _cell_run(client: MlflowClient, experiment_id: str, parent: str, spec: CompareSpec, cell: Cell, fingerprint: str) -> str:
    tags = {
        FINGERPRINT_TAG: fingerprint,
        MLFLOW_PARENT_RUN_ID: parent,
        NAME_TAG: spec.name,
        CELL_TAG: cell.key,
        "compare.method": cell.method,
        "compare.scenario": cell.scenario,
        "compare.seed": str(cell.seed),
    }
    name = f"{spec.name}-{cell.method}-{cell.scenario}-seed{cell.seed}"
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


def _values(client: MlflowClient, run_id: str, domains: list[str]) -> dict[str, float]:
    """A finished cell's table values, read back from its MLflow run."""
    metrics = client.get_run(run_id).data.metrics
    history = {
        direction: [m.value for m in sorted(client.get_metric_history(run_id, f"wire/bytes_{direction}"), key=lambda m: m.step)]
        for direction in ("up", "down")
    }
    return cell_values(metrics, history["up"], history["down"], domains)


def _run_cell(
    client: MlflowClient, prepared: PreparedComparison, cell: Cell, run_id: str, attacks: Mapping[str, Any] | None
) -> str | None:
    """Fit one cell into ``run_id`` and, with ``attacks``, run the server's attacks on the trained model and log
    them into the same run; the error text when either fails (the cell is FAILED and the comparison goes on)."""
    try:
        cli = run_cli(prepared.arguments(cell, run_id))
        if attacks is not None:
            log_leakage_to(client, run_id, attack_run(cli.model, cli.datamodule, attacks))
    except (KeyboardInterrupt, SystemExit):  # Ctrl+C (Lightning turns it into SystemExit): stop the comparison
        client.set_terminated(run_id, "KILLED")
        raise
    except Exception as err:  # a cell that breaks is recorded and the others still run
        error = f"{type(err).__name__}: {err}"
        log.exception("cell %s failed", cell.label)
        client.set_tag(run_id, "compare.error", error[:5000])
        client.set_terminated(run_id, "FAILED")
        return error
    client.set_terminated(run_id, "FINISHED")
    return None


def _attack_finished_cell(client: MlflowClient, run: Run, attacks: Mapping[str, Any]) -> None:
    """A cell finished before attacks were asked for (or attacked by an older version of them): attack its logged
    last checkpoint, into its run."""
    if run.data.tags.get(VERSION_TAG) == ATTACKS_VERSION:
        return
    with tempfile.TemporaryDirectory(prefix="huscf-attack-") as folder:
        path = logged_checkpoint(client, run.info.run_id, Path(folder))
        model, datamodule = load_run(str(path))
        log_leakage_to(client, run.info.run_id, attack_run(model, datamodule, attacks))


def _log_table(client: MlflowClient, parent: str, rows: list[Row], markdown: str, csv: str, labels: dict[str, str]) -> None:
    client.log_text(parent, markdown, "comparison.md")
    client.log_text(parent, csv, "comparison.csv")
    for metric, figure in metric_figures(rows, labels).items():
        client.log_figure(parent, figure, f"charts/{metric}.png")
    tradeoff = tradeoff_figure(rows)
    if tradeoff is not None:
        client.log_figure(parent, tradeoff, "charts/tradeoff.png")


def run_comparison(spec: CompareSpec, on_cell: Callable[[CellOutcome, int, int], None] | None = None) -> ComparisonResult:
    """Run every cell not finished before, then log the table (Markdown, CSV, a bar chart per metric) to the
    parent run. ``on_cell(outcome, index, total)`` is called after each cell, skipped ones included."""
    with tempfile.TemporaryDirectory(prefix="huscf-compare-") as folder:
        prepared = prepare(spec, Path(folder))
        uri, experiment = prepared.tracking_uri, prepared.experiment_name
        check_tracking_uri(uri)
        client = MlflowClient(uri)
        experiment_id = open_experiment(client, experiment, uri)
        parent = _parent_run(client, experiment_id, spec)
        client.log_dict(parent, spec.to_dict(), "compare.yaml")
        done = _finished_children(client, experiment_id, parent)
        cells = spec.cells
        outcomes = []
        try:
            for index, cell in enumerate(cells, 1):
                previous = done.get((cell.key, prepared.fingerprints[cell]))
                if previous is not None:
                    if spec.privacy_attacks is not None:
                        _attack_finished_cell(client, previous, spec.privacy_attacks)
                    outcome = CellOutcome(cell, "skipped", previous.info.run_id, 0.0)
                else:
                    run_id = _cell_run(client, experiment_id, parent, spec, cell, prepared.fingerprints[cell])
                    started = time.perf_counter()
                    error = _run_cell(client, prepared, cell, run_id, spec.privacy_attacks)
                    state = "failed" if error else "finished"
                    outcome = CellOutcome(cell, state, run_id, time.perf_counter() - started, error)
                outcomes.append(outcome)
                if on_cell is not None:
                    on_cell(outcome, index, len(cells))
        except BaseException:
            client.set_terminated(parent, "KILLED")
            raise
    per_pair: dict[tuple[str, str], list[dict[str, float]]] = {}
    for outcome in outcomes:
        if outcome.state != "failed":
            values = _values(client, outcome.run_id, prepared.domains[outcome.cell.scenario])
            per_pair.setdefault((outcome.cell.scenario, outcome.cell.method), []).append(values)
    metrics = METRICS if spec.privacy_attacks is None else METRICS + PRIVACY_METRICS
    rows = summarize(per_pair, prepared.domains, metrics)
    markdown = markdown_table(rows, spec.ours, prepared.labels)
    csv = csv_table(rows, spec.ours)
    if rows:
        _log_table(client, parent, rows, markdown, csv, prepared.labels)
    failed = [o for o in outcomes if o.state == "failed"]
    client.log_metric(parent, "compare/finished_cells", len(outcomes) - len(failed))
    client.log_metric(parent, "compare/failed_cells", len(failed))
    client.set_terminated(parent, "FAILED" if failed else "FINISHED")
    if any(math.isnan(r.mean) for r in rows):
        log.warning("some table entries are n/a: a cell's run did not log that metric")
    return ComparisonResult(parent, uri, experiment, outcomes, rows, markdown, csv)
