"""Generation score: the Inception Score with a classifier trained on the domain's own real data.

score = exp(E_x KL(p(y|x) || p(y))). It is 1 when the classifier sees every sample alike and at
most the number of classes when samples are confidently recognised and the classes are balanced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from huscf_lightning.metrics.classifier import predict_logits
from huscf_lightning.metrics.errors import MetricInputError

SampleFn = Callable[[Tensor], Tensor]
"""Maps a batch of class labels (int64) to generated images for those labels."""


def generation_score(probs: Tensor) -> float:
    """exp of the mean KL divergence between each row of ``probs`` (N, C) and their mean."""
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise MetricInputError(
            f"generation_score expects class probabilities of shape (N, C) with N >= 1; got "
            f"{tuple(probs.shape)}. Apply softmax to the classifier's logits first."
        )
    probs = probs.double()
    row_sums = probs.sum(dim=1)
    if bool((probs < 0).any()) or not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4):
        raise MetricInputError(
            "generation_score expects rows that are probability distributions (non-negative, summing "
            "to 1); got something else. Pass softmax(logits), not the logits."
        )
    marginal = probs.mean(dim=0, keepdim=True)
    kl = (torch.xlogy(probs, probs) - torch.xlogy(probs, marginal)).sum(dim=1)
    return float(torch.exp(kl.mean()))


def balanced_labels(num_samples: int, num_classes: int, seed: int = 0) -> Tensor:
    """``num_samples`` labels with every class equally often (up to one), in a seeded random order."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_samples) % num_classes
    return labels[torch.randperm(num_samples, generator=generator)]


@torch.no_grad()
def generate_uniform(
    sample_fn: SampleFn, num_samples: int, num_classes: int, batch_size: int = 500, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Images and labels of ``num_samples`` generated samples with uniform labels, in batches.

    The labels are created on the CPU and moved by ``sample_fn`` wherever its generator runs;
    the images come back on that device.
    """
    if num_samples < 1 or batch_size < 1:
        raise MetricInputError(
            f"num_samples and batch_size must be at least 1; got num_samples={num_samples}, batch_size={batch_size}."
        )
    labels = balanced_labels(num_samples, num_classes, seed)
    images = torch.cat([sample_fn(batch) for batch in labels.split(batch_size)])
    return images, labels


def classifier_probs(classifier: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """p(y|x) of the classifier over ``images``."""
    return predict_logits(classifier, images, batch_size).softmax(dim=1)


def domain_generation_score(
    classifier: nn.Module,
    sample_fn: SampleFn,
    num_samples: int = 5000,
    num_classes: int = 10,
    batch_size: int = 500,
    seed: int = 0,
) -> float:
    """Generation score of ``num_samples`` samples of uniform labels, scored by the domain classifier."""
    images, _ = generate_uniform(sample_fn, num_samples, num_classes, batch_size, seed)
    classifier = classifier.to(images.device)
    return generation_score(classifier_probs(classifier, images, batch_size))
