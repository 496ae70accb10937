"""A learned decoder from head activations back to images, trained by the server on images it holds itself.

The server runs labelled images it owns (a domain's test split, disjoint from every client's training data, or
another domain's images) through the attacker's copy of a discriminator head, in train mode on batches the size
of the clients' and with the run's noise defence applied, and fits a small network mapping each activation to its
image. Applied to a client's traffic it reconstructs the client's images in one forward pass, with no per-batch
optimisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from huscf_lightning.privacy.attacks.views import AttackError, observe
from huscf_lightning.privacy.spec import PrivacySpec


@dataclass(frozen=True)
class DecoderSettings:
    """``epochs`` of Adam at ``lr`` over the server's images; ``width``: channels of the decoder's layers."""

    epochs: int = 15
    lr: float = 3e-3
    width: int = 16

    def validate(self) -> None:
        """Raise an `AttackError` naming the fix for settings training cannot use."""
        if not (isinstance(self.epochs, int) and self.epochs >= 1 and self.lr > 0 and self.width >= 1):
            raise AttackError(
                f"The decoder needs epochs >= 1 (an int), lr > 0 and width >= 1; got epochs={self.epochs}, "
                f"lr={self.lr}, width={self.width}."
            )


class ActivationDecoder(nn.Module):
    """Activation -> image: a conv stem at the activation's resolution (a linear one to 7x7 for flat activations),
    transposed convolutions doubling the side until it reaches the image's (batch norm and ReLU after each), a
    resize to it exactly and a linear conv out. No tanh: with a saturating output the decoder collapsed to the
    all-background image on a two-block head; `decode` clamps to [-1, 1] instead."""

    def __init__(self, activation_shape: Sequence[int], image_shape: Sequence[int], width: int = 16) -> None:
        super().__init__()
        channels, height, side = image_shape
        if len(activation_shape) == 3:
            layers: list[nn.Module] = [nn.Conv2d(activation_shape[0], width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            reached = min(activation_shape[1:])
        else:
            values = int(torch.tensor(activation_shape).prod())
            layers = [nn.Flatten(), nn.Linear(values, width * 7 * 7), nn.Unflatten(1, (width, 7, 7)), nn.BatchNorm2d(width),
                      nn.ReLU()]
            reached = 7
        while reached < min(height, side):
            layers += [nn.ConvTranspose2d(width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU()]
            reached *= 2
        self.features = nn.Sequential(*layers)
        self.size = (height, side)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, activation: Tensor) -> Tensor:
        h = self.features(activation)
        if tuple(h.shape[-2:]) != self.size:
            h = F.interpolate(h, size=self.size, mode="bilinear", align_corners=False)
        return self.out(h)


def train_decoder(head: nn.Module, images: Tensor, labels: Tensor, batch_size: int, spec: PrivacySpec | None = None,
                  settings: DecoderSettings | None = None, seed: int = 0) -> ActivationDecoder:
    """A decoder fitted on (``head``'s observed activation, image) pairs of the server's own ``images`` and
    ``labels``, reshuffled into batches of ``batch_size`` every epoch (a train-mode head's output depends on its
    batch), with ``spec``'s noise applied as the clients' traffic gets it. Returned in eval mode."""
    settings = settings or DecoderSettings()
    settings.validate()
    spec = spec or PrivacySpec()
    if images.shape[0] < batch_size or batch_size < 2:
        raise AttackError(
            f"The decoder trains on batches of {batch_size} (the clients' batch) from {images.shape[0]} server images; "
            "give it at least one batch of images (another public domain, or a larger test split) and batch_size >= 2."
        )
    reference = next(iter(head.parameters()))
    device, dtype = reference.device, reference.dtype
    images, labels = images.to(device=device, dtype=dtype), labels.to(device)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    first = observe(head, images[:batch_size], labels[:batch_size], spec, noise)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = ActivationDecoder(first.shape[1:], images.shape[1:], settings.width)
    decoder = decoder.to(device=device, dtype=dtype).train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=settings.lr)
    full = images.shape[0] // batch_size * batch_size  # whole batches only, as the clients send
    with torch.enable_grad():
        for _ in range(settings.epochs):
            order = torch.randperm(images.shape[0], generator=generator)[:full].to(device)
            for batch in order.split(batch_size):
                activation = observe(head, images[batch], labels[batch], spec, noise)
                loss = F.mse_loss(decoder(activation), images[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return decoder.eval()


@torch.no_grad()
def decode(decoder: nn.Module, activation: Tensor) -> Tensor:
    """The images ``decoder`` reconstructs from a batch of observed ``activation``, in [-1, 1]."""
    return decoder.eval()(activation).clamp(-1.0, 1.0)
