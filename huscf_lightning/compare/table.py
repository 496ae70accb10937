"""The comparison table, as pure functions: one cell's values from its run's metrics, means and stds
over seeds, the average over domains, and our method's relative gain over each other method."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MEAN_DOMAIN = "mean"  # the row of a per-domain metric averaged over domains (per seed, then over seeds)


@dataclass(frozen=True)
class TableMetric:
    """A column of the comparison: its name, label, whether it is per domain and which way is better."""

    name: str
    label: str
    per_domain: bool
    higher_is_better: bool

    @property
    def better(self) -> str:
        return "higher" if self.higher_is_better else "lower"


METRICS = (
    TableMetric("accuracy", "utility accuracy", True, True),
    TableMetric("f1", "utility macro F1", True, True),
    TableMetric("score", "generation score", True, True),
    TableMetric("fid", "FID", True, False),
    TableMetric("latency", "modeled latency per iteration (s)", False, False),
    TableMetric("bytes", "bytes per round", False, False),
)

# What the server's attacks recover (`privacy.leakage.summarise`, logged as ``privacy/<name>``): in a comparison
# with ``privacy_attacks``. The mean-image PSNR is the reference a reconstruction must beat to mean anything.
PRIVACY_METRICS = (
    TableMetric("reconstruction_psnr", "server's image reconstruction, PSNR (dB, best attack)", False, False),
    TableMetric("mean_image_psnr", "PSNR of guessing the mean image (dB, reference)", False, False),
    TableMetric("reconstruction_ssim", "server's image reconstruction, SSIM (best attack)", False, False),
    TableMetric("reconstruction_class_accuracy", "class kept in the reconstructions (classifier accuracy)", False, False),
    TableMetric("label_accuracy", "server's label recovery (best of its probes)", False, False),
)


ALL_METRICS = METRICS + PRIVACY_METRICS


@dataclass(frozen=True)
class Row:
    """One number of the table: a metric of a method on a scenario (per domain, the domain mean, or
    global when ``domain`` is empty), as mean and sample std over ``seeds`` seeds (std NaN for one)."""

    scenario: str
    metric: str
    domain: str
    method: str
    mean: float
    std: float
    seeds: int


def cell_values(
    metrics: Mapping[str, float],
    bytes_up: Sequence[float],
    bytes_down: Sequence[float],
    domains: Sequence[str],
) -> dict[str, float]:
    """One finished cell's values, keyed ``<metric>/<domain>`` or ``<metric>``; NaN where the run logged none.

    ``metrics`` are the run's latest values (the last round for ``eval/*``); ``bytes_up``/``bytes_down``
    the per-round wire totals, whose mean sum is the bytes per round.
    """
    sources = {"accuracy": "utility/accuracy", "f1": "utility/f1", "score": "eval/score", "fid": "eval/fid"}
    values = {
        f"{name}/{domain}": float(metrics.get(f"{source}/{domain}", math.nan))
        for name, source in sources.items()
        for domain in domains
    }
    values["latency"] = float(metrics.get("plan/latency_s", math.nan))
    values.update({m.name: float(metrics.get(f"privacy/{m.name}", math.nan)) for m in PRIVACY_METRICS})
    rounds = [up + down for up, down in zip(bytes_up, bytes_down)]
    values["bytes"] = sum(rounds) / len(rounds) if rounds else math.nan
    return values


def mean_std(samples: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single sample; NaN in, NaN out)."""
    if not samples:
        return math.nan, math.nan
    mean = sum(samples) / len(samples)
    std = statistics.stdev(samples) if len(samples) > 1 and not any(map(math.isnan, samples)) else math.nan
    return mean, std


def summarize(
    cells: Mapping[tuple[str, str], Sequence[Mapping[str, float]]],
    domains: Mapping[str, Sequence[str]],
    metrics: Sequence[TableMetric] = METRICS,
) -> list[Row]:
    """The table's rows of ``metrics`` from every (scenario, method)'s per-seed `cell_values`, with ``domains`` per
    scenario.

    A per-domain metric gets one row per domain and one for the mean over domains (taken per seed,
    so its std is over seeds too).
    """
    rows = []
    for (scenario, method), seeds in cells.items():
        for metric in metrics:
            if not metric.per_domain:
                rows.append(Row(scenario, metric.name, "", method, *mean_std([s[metric.name] for s in seeds]), len(seeds)))
                continue
            per_domain = {d: [s[f"{metric.name}/{d}"] for s in seeds] for d in domains[scenario]}
            for domain, samples in per_domain.items():
                rows.append(Row(scenario, metric.name, domain, method, *mean_std(samples), len(seeds)))
            averaged = [sum(samples[i] for samples in per_domain.values()) / len(per_domain) for i in range(len(seeds))]
            rows.append(Row(scenario, metric.name, MEAN_DOMAIN, method, *mean_std(averaged), len(seeds)))
    return rows


def relative_gain(ours: float, baseline: float) -> float:
    """(ours - baseline) / |baseline| in percent; NaN when the baseline is 0 or a value is missing."""
    if baseline == 0 or math.isnan(baseline) or math.isnan(ours):
        return math.nan
    return 100.0 * (ours - baseline) / abs(baseline)


def gains(rows: Sequence[Row], ours: str) -> dict[tuple[str, str, str, str], float]:
    """Our method's relative gain in % over every other method, keyed (scenario, metric, domain, baseline)."""
    means = {(r.scenario, r.metric, r.domain, r.method): r.mean for r in rows}
    return {
        (r.scenario, r.metric, r.domain, r.method): relative_gain(means[(r.scenario, r.metric, r.domain, ours)], r.mean)
        for r in rows
        if r.method != ours and (r.scenario, r.metric, r.domain, ours) in means
    }


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def _mean_std_text(row: Row) -> str:
    return _number(row.mean) if math.isnan(row.std) else f"{_number(row.mean)} ± {_number(row.std)}"


def _gain_text(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.1f} %"


def markdown_table(rows: Sequence[Row], ours: str | None, labels: Mapping[str, str] | None = None) -> str:
    """One Markdown table per scenario: a row per metric and domain, a column per method (mean ± std over
    seeds), which direction is better, and our gain over each other method."""
    labels = {m.name: m.label for m in ALL_METRICS} | dict(labels or {})
    direction = {m.name: m.better for m in ALL_METRICS}
    gain = gains(rows, ours) if ours else {}
    sections = []
    for scenario in dict.fromkeys(r.scenario for r in rows):
        mine = [r for r in rows if r.scenario == scenario]
        methods = list(dict.fromkeys(r.method for r in mine))
        baselines = [m for m in methods if ours and m != ours and ours in methods]
        header = ["metric", "domain", "better", *[f"{m} (ours)" if m == ours else m for m in methods]]
        header += [f"gain vs {m}" for m in baselines]
        seeds = max(r.seeds for r in mine)
        lines = [f"### {scenario} (mean ± std over {seeds} seed{'s' if seeds > 1 else ''})", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        by_key = {(r.metric, r.domain, r.method): r for r in mine}
        for metric, domain in dict.fromkeys((r.metric, r.domain) for r in mine):
            cells = [_mean_std_text(by_key[(metric, domain, m)]) if (metric, domain, m) in by_key else "" for m in methods]
            cells += [_gain_text(gain.get((scenario, metric, domain, m))) for m in baselines]
            lines.append("| " + " | ".join([labels[metric], domain or "all", direction[metric], *cells]) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def csv_table(rows: Sequence[Row], ours: str | None) -> str:
    """The table in long form, one line per number, with our gain over that method (empty for ours)."""
    gain = gains(rows, ours) if ours else {}
    direction = {m.name: m.better for m in ALL_METRICS}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scenario", "metric", "domain", "better", "method", "mean", "std", "seeds", "gain_pct_of_ours"])
    for r in rows:
        value = gain.get((r.scenario, r.metric, r.domain, r.method))
        writer.writerow([r.scenario, r.metric, r.domain, direction[r.metric], r.method, repr(r.mean), repr(r.std),
                         r.seeds, "" if value is None else repr(value)])
    return buffer.getvalue()
