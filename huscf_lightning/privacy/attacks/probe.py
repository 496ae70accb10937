"""Label inference: a linear probe that reads a client's class labels off its head activations.

Labels never leave a client in HuSCF-GAN, but both heads embed them. The server makes labelled activations itself
(its own noise and labels through the attacker's generator head, or its own labelled images through the
discriminator head, with the run's noise defence applied), fits a logistic regression on them, and applies it to
the client's traffic. Accuracy far above chance (1 / classes) means the activations give the labels away.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_accuracy

from huscf_lightning.privacy.attacks.views import AttackError, observe
from huscf_lightning.privacy.spec import PrivacySpec


@dataclass(frozen=True)
class ProbeSettings:
    """``samples``: the generator-head probe's training activations (the server draws them freely); full-batch
    Adam ``steps`` at ``lr`` with L2 ``weight_decay`` on the standardised, flattened activations."""

    samples: int = 2048
    steps: int = 100
    lr: float = 0.01
    weight_decay: float = 1e-4

    def validate(self) -> None:
        """Raise an `AttackError` naming the fix for settings the probe cannot use."""
        if not (self.samples >= 2 and self.steps >= 1 and self.lr > 0 and self.weight_decay >= 0):
            raise AttackError(
                f"The probe needs samples >= 2, steps >= 1, lr > 0 and weight_decay >= 0; got samples={self.samples}, "
                f"steps={self.steps}, lr={self.lr}, weight_decay={self.weight_decay}."
            )


@dataclass(frozen=True)
class ProbeResult:
    """The probe's ``accuracy`` on the client's traffic and the ``chance`` accuracy of guessing (1 / classes)."""

    accuracy: float
    chance: float


class LinearProbe(nn.Module):
    """Logistic regression on flattened activations, standardised with its training set's mean and std."""

    def __init__(self, features: Tensor, num_classes: int) -> None:
        super().__init__()
        flat = features.flatten(1)
        self.register_buffer("mean", flat.mean(dim=0))
        self.register_buffer("std", flat.std(dim=0).clamp_min(1e-6))
        self.linear = nn.Linear(flat.shape[1], num_classes, device=flat.device, dtype=flat.dtype)

    def standardise(self, activation: Tensor) -> Tensor:
        """Flattened and scaled to the training set's zero mean and unit variance per value."""
        return (activation.flatten(1) - self.mean) / self.std

    def forward(self, activation: Tensor) -> Tensor:
        return self.linear(self.standardise(activation))


def train_probe(features: Tensor, labels: Tensor, num_classes: int, settings: ProbeSettings | None = None,
                seed: int = 0) -> LinearProbe:
    """A `LinearProbe` fitted to predict ``labels`` from ``features`` (N, ...); deterministic in ``seed``."""
    settings = settings or ProbeSettings()
    settings.validate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = LinearProbe(features.detach(), num_classes)
    optimizer = torch.optim.Adam(probe.linear.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    labels = labels.to(features.device)
    standardised = probe.standardise(features.detach())  # once, not every step
    with torch.enable_grad():
        for _ in range(settings.steps):
            loss = F.cross_entropy(probe.linear(standardised), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return probe.eval()


def probe_accuracy(probe: nn.Module, activation: Tensor, labels: Tensor, num_classes: int) -> ProbeResult:
    """How often ``probe`` names the true ``labels`` of a client's observed ``activation``, and chance."""
    with torch.no_grad():
        predicted = probe(activation).argmax(dim=1)
    accuracy = multiclass_accuracy(predicted, labels.to(predicted.device), num_classes, average="micro")
    return ProbeResult(float(accuracy), 1.0 / num_classes)


def _observed_batches(head: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int, spec: PrivacySpec,
                      noise: torch.Generator) -> Tensor:
    """``head``'s observed activations of ``inputs`` in whole batches of ``batch_size`` (as the clients send)."""
    full = inputs.shape[0] // batch_size * batch_size
    if full == 0:
        raise AttackError(
            f"The probe trains on batches of {batch_size} (the clients' batch) but the server holds only "
            f"{inputs.shape[0]} inputs; give it more (ProbeSettings.samples, or a larger public set)."
        )
    parts = [observe(head, x, y, spec, noise) for x, y in zip(inputs[:full].split(batch_size), labels[:full].split(batch_size))]
    return torch.cat(parts)


def g_head_probe(head: nn.Module, z_dim: int, num_classes: int, activation: Tensor, labels: Tensor, batch_size: int,
                 spec: PrivacySpec | None = None, settings: ProbeSettings | None = None, seed: int = 0) -> ProbeResult:
    """Label inference from generator-head traffic ``activation`` (true ``labels``): a probe trained on the
    server's own noise and uniformly drawn labels through ``head``."""
    settings = settings or ProbeSettings()
    reference = next(iter(head.parameters()))
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(settings.samples, z_dim, generator=generator, dtype=reference.dtype).to(reference.device)
    drawn = torch.randint(num_classes, (settings.samples,), generator=generator).to(reference.device)
    noise = torch.Generator().manual_seed(seed + 1)
    features = _observed_batches(head, z, drawn, batch_size, spec or PrivacySpec(), noise)
    probe = train_probe(features, drawn[: features.shape[0]], num_classes, settings, seed)
    return probe_accuracy(probe, activation, labels, num_classes)


def d_head_probe(head: nn.Module, images: Tensor, labels: Tensor, num_classes: int, activation: Tensor,
                 true_labels: Tensor, batch_size: int, spec: PrivacySpec | None = None,
                 settings: ProbeSettings | None = None, seed: int = 0) -> ProbeResult:
    """Label inference from discriminator-head traffic ``activation`` (``true_labels``): a probe trained on the
    server's own labelled ``images`` through ``head``, in batches of a seeded shuffle (batch norm mixes a batch)."""
    reference = next(iter(head.parameters()))
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    noise = torch.Generator().manual_seed(seed + 1)
    images = images[order].to(device=reference.device, dtype=reference.dtype)
    labels = labels[order].to(reference.device)
    features = _observed_batches(head, images, labels, batch_size, spec or PrivacySpec(), noise)
    probe = train_probe(features, labels[: features.shape[0]], num_classes, settings, seed)
    return probe_accuracy(probe, activation, true_labels, num_classes)
