"""The utility test of a trained run, per domain, and its CSV and text table.

Shared by the end-of-training callback and the ``evaluate`` command: each domain's generator
produces labelled samples that train the METHOD.md CNN, which is then tested on the real test split.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from huscf_lightning.metrics.domain_samples import GeneratingModel, domain_samples
from huscf_lightning.metrics.utility import UTILITY_METRICS, utility

if TYPE_CHECKING:
    from huscf_lightning.data.registry import DomainData


def evaluate_utility(
    model: GeneratingModel,
    domain_data: Callable[[str], DomainData],
    num_samples: int = 30000,
    epochs: int = 15,
    batch_size: int = 64,
    generation_batch_size: int = 500,
    seed: int = 0,
) -> list[dict[str, float | int | str]]:
    """Per domain: train the METHOD.md CNN on ``num_samples`` generated samples, test on the real test split.

    ``domain_data`` gives a domain's real data (e.g. a datamodule's ``domain_data``). Returns one
    row per domain: domain, client (whose generator was used), num_samples, the metrics of
    ``UTILITY_METRICS`` and the seconds it took.
    """
    results: list[dict[str, float | int | str]] = []
    for domain in model.domain_names:
        started = time.perf_counter()
        data = domain_data(domain)
        images, labels, client = domain_samples(model, domain, num_samples, generation_batch_size, seed)
        scores = utility(
            images, labels, data.test_images, data.test_labels, data.num_classes, epochs, seed, batch_size
        )
        results.append(
            {
                "domain": domain,
                "client": client,
                "num_samples": num_samples,
                **scores,
                "seconds": time.perf_counter() - started,
            }
        )
    return results


def utility_csv(results: Sequence[dict[str, Any]]) -> str:
    """The utility rows as CSV text (header from the first row)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(results[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(results)
    return buffer.getvalue()


def format_utility_table(results: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of the utility metrics, one line per domain."""
    header = f"{'domain':<16}" + "".join(f"{name:>10}" for name in UTILITY_METRICS)
    lines = [header, "-" * len(header)]
    for row in results:
        lines.append(f"{row['domain']:<16}" + "".join(f"{row[name]:>10.4f}" for name in UTILITY_METRICS))
    return "\n".join(lines)
