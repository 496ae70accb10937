"""Data: image domains, scenario partitioning and the per-client LightningDataModule."""

from huscf_lightning.data.datamodule import HuSCFDataModule
from huscf_lightning.data.domains import (
    DomainData,
    DomainError,
    clear_domain_cache,
    known_domains,
    load_domain,
    read_idx,
    register_domain,
)
from huscf_lightning.data.partition import (
    DISTRIBUTIONS,
    ClientPartition,
    DomainSpec,
    PartitionError,
    format_partition_table,
    partition_clients,
    partition_table,
    resolve_cap,
)

__all__ = [
    "DISTRIBUTIONS",
    "ClientPartition",
    "DomainData",
    "DomainError",
    "DomainSpec",
    "HuSCFDataModule",
    "PartitionError",
    "clear_domain_cache",
    "format_partition_table",
    "known_domains",
    "load_domain",
    "partition_clients",
    "partition_table",
    "read_idx",
    "register_domain",
    "resolve_cap",
]
