"""One bar chart per table metric: a panel per scenario, a group of bars per domain (and their mean),
a bar per method with its std over seeds as the error bar; and, where the server's attacks ran, the privacy
trade-off: what each method leaks against what it is worth."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from huscf_lightning.compare.table import ALL_METRICS, MEAN_DOMAIN, Row


def metric_figure(rows: Sequence[Row], metric: str, label: str) -> Figure:
    """The bar chart of one metric over every scenario of ``rows``."""
    mine = [r for r in rows if r.metric == metric]
    scenarios = list(dict.fromkeys(r.scenario for r in mine))
    figure = Figure(figsize=(max(4.0, 3.5 * len(scenarios)), 3.6))
    panels = figure.subplots(1, len(scenarios), squeeze=False)[0]
    for axes, scenario in zip(panels, scenarios):
        here = [r for r in mine if r.scenario == scenario]
        methods = list(dict.fromkeys(r.method for r in here))
        groups = list(dict.fromkeys(r.domain for r in here))
        width = 0.8 / len(methods)
        by_key = {(r.domain, r.method): r for r in here}
        for i, method in enumerate(methods):
            bars = [by_key.get((g, method)) for g in groups]
            axes.bar(
                [j + (i - (len(methods) - 1) / 2) * width for j in range(len(groups))],
                [b.mean if b else math.nan for b in bars],
                width,
                yerr=[0.0 if b is None or math.isnan(b.std) else b.std for b in bars],
                label=method,
                capsize=3,
            )
        axes.set_xticks(range(len(groups)), [g or "all" for g in groups])
        axes.set_title(scenario)
    panels[0].set_ylabel(label)
    panels[-1].legend(loc="best", fontsize=8)
    return figure


def metric_figures(rows: Sequence[Row], labels: Mapping[str, str] | None = None) -> dict[str, Figure]:
    """Every metric's bar chart, keyed by metric name."""
    labels = {m.name: m.label for m in ALL_METRICS} | dict(labels or {})
    present = dict.fromkeys(r.metric for r in rows)
    return {m.name: metric_figure(rows, m.name, labels[m.name]) for m in ALL_METRICS if m.name in present}


TRADEOFF_AXES = (("reconstruction_psnr", "image reconstruction PSNR (dB)"), ("label_accuracy", "label recovery accuracy"))


def tradeoff_figure(rows: Sequence[Row]) -> Figure | None:
    """Utility accuracy (mean over domains) against what the server recovers, a point per method and a row of
    panels per scenario: reconstruction PSNR (with the mean-image guess as a dashed line) and label accuracy.
    None when the rows hold no attack results."""
    means = {(r.scenario, r.metric, r.domain, r.method): r for r in rows}
    scenarios = list(dict.fromkeys(r.scenario for r in rows if r.metric == "reconstruction_psnr"))
    if not scenarios:
        return None
    figure = Figure(figsize=(9.0, 3.6 * len(scenarios)))
    panels = figure.subplots(len(scenarios), len(TRADEOFF_AXES), squeeze=False)
    for line, scenario in zip(panels, scenarios):
        methods = list(dict.fromkeys(r.method for r in rows if r.scenario == scenario))
        for axes, (metric, label) in zip(line, TRADEOFF_AXES):
            for method in methods:
                x, y = means.get((scenario, metric, "", method)), means.get((scenario, "accuracy", MEAN_DOMAIN, method))
                if x is None or y is None or math.isnan(x.mean) or math.isnan(y.mean):
                    continue
                axes.errorbar(x.mean, y.mean, xerr=0 if math.isnan(x.std) else x.std,
                              yerr=0 if math.isnan(y.std) else y.std, fmt="o", capsize=3, label=method)
            reference = [means[(scenario, "mean_image_psnr", "", m)].mean for m in methods
                         if (scenario, "mean_image_psnr", "", m) in means]
            if metric == "reconstruction_psnr" and reference and not math.isnan(reference[0]):
                axes.axvline(sum(reference) / len(reference), linestyle="--", color="grey", label="mean-image guess")
            axes.set_xlabel(label)
            axes.set_ylabel("utility accuracy (mean over domains)")
            axes.set_title(scenario)
        line[-1].legend(loc="best", fontsize=7)
    figure.tight_layout()
    return figure
