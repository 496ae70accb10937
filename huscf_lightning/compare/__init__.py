"""Comparing methods: every method on every scenario with every seed, on one budget, as MLflow child
runs of one parent run, summarised in a table (mean ± std over seeds, our relative gain over each
baseline) with a bar chart per metric. ``python -m huscf_lightning compare --config SPEC`` runs it.
"""

from huscf_lightning.compare.charts import metric_figure, metric_figures
from huscf_lightning.compare.prepare import BUDGET_KEYS, PreparedComparison, method_problem, prepare
from huscf_lightning.compare.runner import CellOutcome, ComparisonResult, run_comparison
from huscf_lightning.compare.spec import (
    Cell,
    CompareError,
    CompareSpec,
    Method,
    Scenario,
    compare_from_mapping,
    load_compare,
)
from huscf_lightning.compare.table import (
    METRICS,
    Row,
    TableMetric,
    cell_values,
    csv_table,
    gains,
    markdown_table,
    mean_std,
    relative_gain,
    summarize,
)

__all__ = [
    "BUDGET_KEYS",
    "METRICS",
    "Cell",
    "CellOutcome",
    "CompareError",
    "CompareSpec",
    "ComparisonResult",
    "Method",
    "PreparedComparison",
    "Row",
    "Scenario",
    "TableMetric",
    "cell_values",
    "compare_from_mapping",
    "csv_table",
    "gains",
    "load_compare",
    "markdown_table",
    "mean_std",
    "method_problem",
    "metric_figure",
    "metric_figures",
    "prepare",
    "relative_gain",
    "run_comparison",
    "summarize",
]
