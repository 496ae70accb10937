"""Which client's generator represents a domain, and drawing evaluation samples from it.

Each domain is judged through the generator of its first client (that client's head, the shared
server blocks and its tail). Evaluation draws its noise under a forked, fixed-seed RNG: rounds are
compared on the same noise, and turning evaluation on or off does not change the training run's
random stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import Tensor

from huscf_lightning.errors import ConfigError
from huscf_lightning.metrics.generation_score import generate_uniform


class GeneratingModel(Protocol):
    """What evaluation needs of a model: its clients' domains and a per-client generator."""

    client_domains: Sequence[str]
    num_classes: int

    @property
    def domain_names(self) -> list[str]: ...

    @property
    def device(self) -> torch.device: ...

    def generate(self, client: int, labels: Tensor) -> Tensor: ...


def domain_client(client_domains: Sequence[str], domain: str) -> int:
    """Index of the first client holding ``domain``: the generator that represents the domain."""
    for client, client_domain in enumerate(client_domains):
        if client_domain == domain:
            return client
    raise ConfigError(
        f"No client holds domain {domain!r} (client domains: {sorted(set(client_domains))}); "
        f"evaluate only the domains the scenario assigns to clients."
    )


@contextmanager
def evaluation_rng(device: torch.device, seed: int) -> Iterator[None]:
    """A fixed-seed RNG for evaluation that leaves the training RNG exactly as it was."""
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


def domain_samples(
    model: GeneratingModel, domain: str, num_samples: int, batch_size: int = 500, seed: int = 0
) -> tuple[Tensor, Tensor, int]:
    """``num_samples`` images with uniform labels from the domain's generator: images, labels and its client."""
    client = domain_client(model.client_domains, domain)
    with evaluation_rng(model.device, seed):
        images, labels = generate_uniform(
            lambda batch: model.generate(client, batch.to(model.device)), num_samples, model.num_classes, batch_size, seed
        )
    return images, labels, client
