"""The domain registry: named loaders, the one shape every domain comes back in, and a per-process cache.

Every domain comes back in the same shape so the rest of the code never cares where it came
from: images float32 ``(N, 1, 28, 28)`` in ``[-1, 1]`` (the generator ends in Tanh), labels
int64. Loading is cached per process, so several clients, callbacks or fits asking for the same
domain share one copy; treat the returned tensors as read-only.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from huscf_lightning.errors import HuSCFError

log = logging.getLogger(__name__)


class DomainError(HuSCFError, ValueError):
    """A domain that cannot be loaded; the message names the problem and the fix."""


@dataclass(frozen=True, eq=False)
class DomainData:
    """One domain's train and test sets: images float32 (N, 1, 28, 28) in [-1, 1], labels int64.

    ``source`` says where the images came from when that is not the obvious (e.g. a test set split
    into train and held-out parts), so figures computed on them can say so; empty otherwise.
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    source: str = ""


DomainLoader = Callable[..., DomainData]
_LOADERS: dict[str, DomainLoader] = {}
_CACHE: dict[tuple[str, str | None, int, str], DomainData] = {}
_FILE_CACHE_CLEARERS: list[Callable[[], None]] = []


def register_domain(name: str) -> Callable[[DomainLoader], DomainLoader]:
    """Register ``loader(seed, [root], **options) -> DomainData`` under ``name`` (also for users)."""

    def decorate(loader: DomainLoader) -> DomainLoader:
        if name in _LOADERS:
            raise DomainError(f"A domain named {name!r} is already registered; pick another name.")
        _LOADERS[name] = loader
        return loader

    return decorate


def known_domains() -> list[str]:
    """Names of every registered domain, sorted."""
    return sorted(_LOADERS)


def load_domain(
    name: str, root: str | None = None, seed: int = 0, options: Mapping[str, Any] | None = None
) -> DomainData:
    """Load (or return the cached) domain ``name``; ``seed`` drives its splits and generation."""
    loader = _LOADERS.get(name)
    if loader is None:
        raise DomainError(
            f"Unknown domain {name!r}. Known domains: {', '.join(known_domains())}. Fix the name in "
            f"the config (data.domains[].name) or register your own loader with register_domain()."
        )
    options = dict(options or {})
    parameters = [p for p in inspect.signature(loader).parameters if p != "seed"]
    option_names = [p for p in parameters if p != "root"]
    if root is not None and "root" not in parameters:
        raise DomainError(
            f"Domain {name!r} is generated or shipped with a package and takes no root; remove "
            f"`root: {root}` from its entry."
        )
    if "root" in options:
        raise DomainError(f"Domain {name!r}: give the data location as the entry's `root:` field, not inside options.")
    unknown = sorted(set(options) - set(option_names))
    if unknown:
        raise DomainError(
            f"Domain {name!r} got unknown option(s) {unknown}; its options are {option_names}. "
            f"Fix the entry's `options:`."
        )
    key = (name, root, seed, json.dumps(options, sort_keys=True, default=repr))
    if key not in _CACHE:
        kwargs = dict(options, **({"root": root} if root is not None else {}))
        _CACHE[key] = loader(seed=seed, **kwargs)
        data = _CACHE[key]
        log.info("Loaded domain %s: %d train, %d test images", name, len(data.train_labels), len(data.test_labels))
    return _CACHE[key]


def register_file_cache(clear: Callable[[], None]) -> None:
    """Let ``clear_domain_cache`` also empty a cache of decoded files kept below the domains."""
    _FILE_CACHE_CLEARERS.append(clear)


def clear_domain_cache() -> None:
    """Forget every cached domain and decoded file (frees memory; the next load reads or generates again)."""
    _CACHE.clear()
    for clear in _FILE_CACHE_CLEARERS:
        clear()
