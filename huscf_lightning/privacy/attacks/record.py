"""The attacks on one run as a record: both stages (after training, at initialisation), a per-run summary in the
comparison table's terms, and its place in MLflow (``privacy/*`` metrics, ``privacy/attacks.json``).

The summary takes, per client, the best the server did (the higher PSNR of inversion and decoder, the best of
its three label reads), then the mean over clients: a defence is judged by the strongest attack it faces.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from torch import nn

from huscf_lightning.engine.tracking import check_tracking_uri
from huscf_lightning.privacy.attacks.decoder import DecoderSettings
from huscf_lightning.privacy.attacks.inversion import InversionSettings
from huscf_lightning.privacy.attacks.probe import ProbeSettings
from huscf_lightning.privacy.attacks.report import AttackSettings, attack_at_initialisation, attack_model
from huscf_lightning.privacy.attacks.views import AttackError

_NESTED = {"inversion": InversionSettings, "decoder": DecoderSettings, "probe": ProbeSettings}
# Tagged on every attacked run: a comparison re-attacks a finished cell whose results an older version of the
# attacks produced (2: a masked run's attacker holds the run's own initial weights, not an unrelated network's).
ATTACKS_VERSION = "2"
VERSION_TAG = "privacy.attacks_version"


@dataclass(frozen=True)
class LeakageReport:
    """Per-client rows after training and at initialisation, and their summary (`summarise`)."""

    trained: list[dict[str, Any]]
    initial: list[dict[str, Any]]

    @property
    def summary(self) -> dict[str, float]:
        """The trained stage's summary, the initialisation's under ``init/``, and per D-head depth."""
        summary = summarise(self.trained)
        summary |= {f"init/{k}": v for k, v in summarise(self.initial).items()}
        for depth in sorted({row["d_head"] for row in self.trained}):
            rows = [row for row in self.trained if row["d_head"] == depth]
            summary |= {f"d_head_{depth}/{k}": v for k, v in summarise(rows).items()}
        return summary


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means over clients of the best attack per client, and of each attack's own results."""
    if not rows:
        return {}

    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else math.nan

    best = {
        "reconstruction_psnr": [max(r["inversion_psnr"], r["decoder_psnr"]) for r in rows],
        "reconstruction_ssim": [max(r["inversion_ssim"], r["decoder_ssim"]) for r in rows],
        "reconstruction_class_accuracy": [max(r["inversion_class_accuracy"], r["decoder_class_accuracy"]) for r in rows],
        "label_accuracy": [max(r["g_probe_accuracy"], r["d_probe_accuracy"], r["inversion_label_accuracy"]) for r in rows],
    }
    own = ("inversion_psnr", "inversion_ssim", "decoder_psnr", "decoder_ssim", "inversion_class_accuracy",
           "decoder_class_accuracy", "inversion_label_accuracy", "g_probe_accuracy", "d_probe_accuracy",
           "real_class_accuracy", "chance")
    summary = {name: mean(values) for name, values in best.items()}
    summary |= {name: mean([float(r[name]) for r in rows]) for name in own}
    summary["mean_image_psnr"] = mean([r["psnr_mean_image"] for r in rows])
    return summary


def attack_settings(values: Mapping[str, Any] | AttackSettings | None) -> AttackSettings:
    """`AttackSettings` from a mapping (a comparison spec's ``privacy_attacks``; nested ``inversion``, ``decoder``,
    ``probe`` mappings for those settings), checked."""
    if isinstance(values, AttackSettings):
        return values
    values = dict(values or {})
    known = [f.name for f in dataclasses.fields(AttackSettings)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=1) or "none" for k in unknown}
        raise AttackError(f"Unknown attack setting(s) {unknown} (close: {hints}); the settings are {known}.")
    for name, kind in _NESTED.items():
        if isinstance(values.get(name), Mapping):
            fields = [f.name for f in dataclasses.fields(kind)]
            bad = sorted(set(values[name]) - set(fields))
            if bad:
                raise AttackError(f"Unknown {name} setting(s) {bad}; the {name} settings are {fields}.")
            values[name] = kind(**values[name])
    settings = AttackSettings(**values)
    settings.validate()
    return settings


def attack_run(model: nn.Module, datamodule: Any, settings: Mapping[str, Any] | AttackSettings | None = None
               ) -> LeakageReport:
    """Every attack on the settings' clients, after training and (``at_initialisation``) at initialisation."""
    checked = attack_settings(settings)
    trained = attack_model(model, datamodule, checked)
    initial = attack_at_initialisation(model, datamodule, checked) if checked.at_initialisation else []
    return LeakageReport(trained, initial)


def leakage_markdown(report: LeakageReport) -> str:
    """The per-client rows of both stages and the summary, as Markdown."""
    columns = ("stage", "client", "domain", "d_head", "g_head", "weights_used", "inversion_psnr", "decoder_psnr",
               "psnr_mean_image", "inversion_ssim", "decoder_ssim", "inversion_class_accuracy",
               "decoder_class_accuracy", "inversion_label_accuracy", "g_probe_accuracy", "d_probe_accuracy", "chance")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in report.trained + report.initial:
        lines.append("| " + " | ".join(f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in columns) + " |")
    summary = report.summary
    lines += ["", "| summary (mean over clients) | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4g} |" for name, value in summary.items()]
    return "\n".join(lines) + "\n"


def log_leakage_to(client: MlflowClient, run_id: str, report: LeakageReport) -> None:
    """``privacy/<summary>`` metrics, ``privacy/attacks.json`` (every row) and ``privacy/attacks.md`` in ``run_id``."""
    for name, value in report.summary.items():
        if not math.isnan(value):
            client.log_metric(run_id, f"privacy/{name}", value)
    client.log_dict(run_id, {"trained": report.trained, "initialisation": report.initial, "summary": report.summary},
                    "privacy/attacks.json")
    client.log_text(run_id, leakage_markdown(report), "privacy/attacks.md")
    client.set_tag(run_id, VERSION_TAG, ATTACKS_VERSION)


def leakage_destination(tracking_uri: str, run_id: str | None, ckpt_path: str) -> MlflowClient:
    """The MLflow store holding the run a checkpoint names, checked before any attack runs (so a wrong store or a
    run without a record fails in a second, not after the attacks)."""
    if run_id is None:
        raise AttackError(
            f"The checkpoint {ckpt_path} names no MLflow run (it was trained without an MLFlowLogger), so there is no "
            "record to add the attacks to; pass --no_log to print them only."
        )
    check_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException as err:
        raise AttackError(
            f"The checkpoint's MLflow run {run_id} is not in {tracking_uri} ({err.error_code}); give the store the run "
            "was tracked in with --tracking_uri, or pass --no_log."
        ) from err
    return client


def logged_checkpoint(client: MlflowClient, run_id: str, folder: Path) -> Path:
    """The run's last logged checkpoint (MLFlowLogger's ``log_model``), downloaded into ``folder``."""
    found: list[str] = []
    pending = [""]
    while pending:
        for item in client.list_artifacts(run_id, pending.pop() or None):
            if item.is_dir:
                pending.append(item.path)
            elif item.path.endswith(".ckpt"):
                found.append(item.path)
    if not found:
        raise AttackError(
            f"MLflow run {run_id} holds no checkpoint (it was logged without trainer.logger.init_args.log_model), so "
            "its model cannot be attacked after the fact; rerun the cell (delete its run) with log_model: true."
        )
    chosen = min(found, key=lambda p: ("last" not in p, p))
    return Path(client.download_artifacts(run_id, chosen, str(folder)))
