"""Partial participation: which clients train in a round (Flower's ``fraction_fit``), drawn from the seed.

Pure functions of (clients, share, seed, round): a resumed run, or one on another number of
processes, draws the same clients for the same round.
"""

from __future__ import annotations

import math

import torch

from huscf_lightning.errors import ConfigError


def clients_per_round(num_clients: int, participation: float) -> int:
    """How many clients train in a round: a fraction of them (rounded, at least one) or a count."""
    if participation <= 1:
        return max(1, math.floor(participation * num_clients + 0.5))  # half rounds up, as a user reads it
    count = int(participation)
    if count > num_clients:
        raise ConfigError(
            f"federation.participation = {count} clients per round, but the run has {num_clients} clients; ask for at "
            f"most {num_clients}, or a fraction in (0, 1]."
        )
    return count


def draw_participants(num_clients: int, participation: float, seed: int, round_index: int) -> tuple[int, ...]:
    """The clients (sorted) that take part in round ``round_index`` (1-based): all of them at participation 1."""
    count = clients_per_round(num_clients, participation)
    if count == num_clients:
        return tuple(range(num_clients))
    generator = torch.Generator().manual_seed(seed * 1_000_033 + round_index)
    return tuple(sorted(torch.randperm(num_clients, generator=generator)[:count].tolist()))
