"""Seeded stratified splits of one labelled set into a training and a held-out part."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor


def stratified_split_indices(labels: Tensor, test_size: float | int, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted train and held-out indices keeping every class's share equal in both (scikit-learn)."""
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_size, stratify=labels.numpy(), random_state=seed
    )
    return torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))


def stratified_split(
    images: Tensor, labels: Tensor, test_size: float | int, seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Seeded split keeping every class's share equal in train and test: (train x, train y, test x, test y)."""
    train_idx, test_idx = stratified_split_indices(labels, test_size, seed)
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]
