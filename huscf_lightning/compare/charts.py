"""One bar chart per table metric: a panel per scenario, a group of bars per domain (and their mean),
a bar per method with its std over seeds as the error bar."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from huscf_lightning.compare.table import METRICS, Row


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
    labels = {m.name: m.label for m in METRICS} | dict(labels or {})
    present = dict.fromkeys(r.metric for r in rows)
    return {m.name: metric_figure(rows, m.name, labels[m.name]) for m in METRICS if m.name in present}
