"""Data: image domains, scenario partitioning and the per-client LightningDataModule.

Importing the package registers the built-in domains (``loaders``); ``registry`` holds the
registry and cache, ``idx``/``mnist_folder``/``notmnist_file`` the file formats, ``glyphs`` the
rendered NotMNIST stand-in.
"""

from huscf_lightning.data import loaders  # noqa: F401  (registers the built-in domains)
from huscf_lightning.data.datamodule import HuSCFDataModule
from huscf_lightning.data.idx import read_idx
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
from huscf_lightning.data.registry import (
    DomainData,
    DomainError,
    clear_domain_cache,
    known_domains,
    load_domain,
    register_domain,
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
