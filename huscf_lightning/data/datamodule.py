"""The LightningDataModule: one shuffled in-memory loader per client, stepped in lock-step.

A training step of HuSCF-GAN needs one batch from every client at once, so ``train_dataloader``
combines the clients' loaders with Lightning's ``CombinedLoader`` in ``max_size_cycle`` mode:
each step yields a list with one ``(images, labels)`` per client, an epoch lasts as long as the
longest client, and shorter clients start a fresh shuffle when they run out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from huscf_lightning.data.partition import (
    ClientPartition,
    DomainSpec,
    PartitionError,
    check_distribution,
    format_partition_table,
    partition_clients,
    partition_table,
    resolve_cap,
)
from huscf_lightning.data.registry import DomainData, DomainError, load_domain

log = logging.getLogger(__name__)


class ClientTensors(Dataset):
    """A client's images and labels in memory, indexed by a whole batch of indices at once."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        return self.images[batch], self.labels[batch]


def batches_per_pass(size: int, batch_size: int) -> int:
    """Batches in one pass over ``size`` images: full batches plus a leftover of two or more."""
    full, rest = divmod(size, batch_size)
    return full + (rest > 1)


class ShuffledBatches(Sampler[Tensor]):
    """Index batches of a fresh seeded permutation each pass, as tensors (no per-sample work).

    A lone leftover sample (size % batch_size == 1) sits out that pass: BatchNorm cannot train
    on a batch of one. It is a different sample each pass, since the permutation changes.
    """

    def __init__(self, size: int, batch_size: int, generator: torch.Generator) -> None:
        super().__init__()
        self.size = size
        self.batch_size = batch_size
        self.generator = generator

    def __len__(self) -> int:
        return batches_per_pass(self.size, self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        batches = torch.randperm(self.size, generator=self.generator).split(self.batch_size)
        yield from batches[: len(self)]


def _batch_as_is(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate function for already-batched items: hand the (images, labels) pair through."""
    return batch


class HuSCFDataModule(pl.LightningDataModule):
    """Clients of one or more domains, partitioned as a scenario, one shuffled loader each.

    Args:
        domains: the scenario, one entry per domain (name, clients, distribution, root, options).
        batch_size: images per client per step.
        seed: drives domain splits and generation, the partition and every client's shuffling.
        cap: client size cap rule: "paper" (60000 // clients), "none", or an int.

    Inside ``training_step`` a batch is a list with one ``(images, labels)`` per client, in
    client order; iterating ``train_dataloader()`` by hand yields ``(batch, step, 0)`` triples.
    """

    def __init__(
        self,
        domains: list[DomainSpec],
        batch_size: int = 64,
        seed: int = 0,
        cap: int | str | None = "paper",
        scenario: str | None = None,
    ) -> None:
        super().__init__()
        # Lightning keeps the arguments in checkpoints (load_from_checkpoint rebuilds the data of a run); the CLI
        # logs the config to MLflow itself, once.
        self.save_hyperparameters(logger=False)
        self.scenario = scenario
        self.domains = [DomainSpec.from_value(spec) for spec in domains]
        self.batch_size = batch_size
        self.seed = seed
        self.cap = cap
        self._data: dict[str, DomainData] = {}
        self._partitions: list[ClientPartition] | None = None
        self._clients: list[ClientTensors] = []
        self._generators: list[torch.Generator] = []
        self._pending_generator_states: list[Tensor] | None = None
        self._train_loader: CombinedLoader | None = None
        self._validate_arguments()

    def _validate_arguments(self) -> None:
        if not self.domains:
            raise PartitionError("data.domains is empty; list at least one domain, e.g. {name: mnist5k, clients: 4}.")
        names = [spec.name for spec in self.domains]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise PartitionError(
                f"Domain(s) {repeated} are listed more than once in data.domains; each domain's training "
                f"set is split among its clients once, so give each domain one entry with its total clients."
            )
        for spec in self.domains:
            check_distribution(spec.distribution)
        resolve_cap(self.cap, max(sum(spec.clients for spec in self.domains), 1))
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise PartitionError(
                f"batch_size must be an int >= 2 (BatchNorm needs two images per batch); got {self.batch_size!r}."
            )

    def setup(self, stage: str | None = None) -> None:
        """Load the domains, partition them and build the clients' tensors (idempotent)."""
        if self._partitions is not None:
            return
        data = {
            spec.name: load_domain(spec.name, root=spec.root, seed=self.seed, options=spec.options)
            for spec in self.domains
        }
        partitions = partition_clients(
            {name: domain.train_labels for name, domain in data.items()}, self.domains, self.seed, self.cap
        )
        too_small = [part.client for part in partitions if part.size < 2]
        if too_small:
            raise PartitionError(
                f"Clients {too_small} hold fewer than 2 images, which BatchNorm cannot train on; give their "
                f"domains fewer clients or a larger cap."
            )
        self._check_batch_fits(partitions)
        self._clients = [
            ClientTensors(data[part.domain].train_images[part.indices], data[part.domain].train_labels[part.indices])
            for part in partitions
        ]
        seeds = np.random.SeedSequence([self.seed, len(partitions)]).generate_state(len(partitions))
        self._generators = [torch.Generator().manual_seed(int(value)) for value in seeds]
        self._data = data
        self._partitions = partitions
        if self._pending_generator_states is not None:
            self._restore_generators(self._pending_generator_states)
            self._pending_generator_states = None
        log.info("Client partition:\n%s", format_partition_table(self.partition_rows()))

    def _check_batch_fits(self, partitions: list[ClientPartition]) -> None:
        """Refuse a batch larger than a client's data: that client would silently train on smaller batches."""
        short = [part for part in partitions if part.size < self.batch_size]
        if short:
            listed = ", ".join(f"client {part.client} ({part.domain}) holds {part.size}" for part in short[:8])
            more = f" and {len(short) - 8} more" if len(short) > 8 else ""
            raise PartitionError(
                f"data.batch_size is {self.batch_size} but {len(short)} client(s) hold fewer images: {listed}{more}; "
                f"each of their steps would use all their images, a smaller batch than configured. Lower "
                f"data.batch_size to at most {min(part.size for part in short)}, or give their domains fewer clients "
                f"or a larger cap."
            )

    def _require_setup(self) -> list[ClientPartition]:
        if self._partitions is None:
            raise RuntimeError("HuSCFDataModule is not set up yet; call datamodule.setup() first.")
        return self._partitions

    @property
    def partitions(self) -> list[ClientPartition]:
        return self._require_setup()

    @property
    def num_clients(self) -> int:
        return len(self._require_setup())

    @property
    def client_domains(self) -> list[str]:
        """The domain of every client, by client index."""
        return [part.domain for part in self._require_setup()]

    @property
    def client_sizes(self) -> list[int]:
        """Training images held by every client, by client index (the FedAvg weights)."""
        return [part.size for part in self._require_setup()]

    @property
    def domain_names(self) -> list[str]:
        """The scenario's domains in config order."""
        return [spec.name for spec in self.domains]

    @property
    def scenario_name(self) -> str:
        """The run's scenario tag: the configured name, else its domains, clients and distributions."""
        return self.scenario or "+".join(f"{d.name}:{d.clients}:{d.distribution}" for d in self.domains)

    @property
    def num_classes(self) -> int:
        """Classes the conditional networks must cover: the largest of the domains'."""
        self._require_setup()
        return max(domain.num_classes for domain in self._data.values())

    def domain_data(self, name: str) -> DomainData:
        """The full loaded domain (train and test sets), e.g. for evaluation."""
        self._require_setup()
        if name not in self._data:
            raise DomainError(f"Domain {name!r} is not in this scenario; its domains are {self.domain_names}.")
        return self._data[name]

    def client_data(self, client: int) -> tuple[Tensor, Tensor]:
        """A client's own training images and labels."""
        self._require_setup()
        dataset = self._clients[client]
        return dataset.images, dataset.labels

    def partition_rows(self) -> list[dict[str, Any]]:
        """Per client: index, domain, size, cap fraction, dropped labels (for logs and artifacts)."""
        return partition_table(self._require_setup())

    def train_dataloader(self) -> CombinedLoader:
        """One step = one batch per client; built once and reused, reshuffling every pass."""
        self._require_setup()
        if self._train_loader is None:
            loaders = [
                DataLoader(
                    client,
                    sampler=ShuffledBatches(len(client), self.batch_size, generator),
                    batch_size=None,
                    collate_fn=_batch_as_is,
                    generator=generator,
                )
                for client, generator in zip(self._clients, self._generators)
            ]
            self._train_loader = CombinedLoader(loaders, mode="max_size_cycle")
        return self._train_loader

    def steps_per_epoch(self) -> int:
        """Steps in one epoch: the batch count of the largest client."""
        return max(batches_per_pass(size, self.batch_size) for size in self.client_sizes)

    def state_dict(self) -> dict[str, Any]:
        """The clients' shuffling generators, so a resumed run draws the same batches."""
        return {"generator_states": [generator.get_state() for generator in self._generators]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = list(state_dict["generator_states"])
        if self._partitions is None:
            self._pending_generator_states = states
        else:
            self._restore_generators(states)

    def _restore_generators(self, states: list[Tensor]) -> None:
        if len(states) != len(self._generators):
            raise PartitionError(
                f"The checkpoint holds shuffling state for {len(states)} clients but this scenario has "
                f"{len(self._generators)}; resume with the data config the checkpoint was made with."
            )
        for generator, state in zip(self._generators, states):
            generator.set_state(state)
