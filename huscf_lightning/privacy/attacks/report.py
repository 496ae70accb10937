"""Every attack of a curious server on a model's clients, as report rows: what the server can learn.

For each attacked client the server takes one real training batch's traffic (the D-head activation of the
client's images and the G-head activation of noise and the same labels, with the run's noise defence applied)
and tries to recover the images (inversion, learned decoder) and the labels (inversion, linear probes on both
heads). It attacks with the client's head weights as they reach it at aggregation, or with the initial weights
when masked aggregation hides them. Images are scored against the real batch (PSNR, SSIM, and whether the
domain's classifier still recognises their classes); the baseline of guessing the server's mean image and
chance accuracy say what "nothing learned" looks like. `attack_at_initialisation` runs the same attacks on an
untrained copy of the networks, whose weights the server knows, for the "after training vs at initialisation"
comparison.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_accuracy
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from huscf_lightning.data.registry import DomainData, load_domain
from huscf_lightning.metrics.classifier import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CLASSIFIER_EPOCHS,
    SmallCNN,
    classifier_accuracy,
    domain_classifier,
)
from huscf_lightning.privacy.attacks.decoder import DecoderSettings, decode, train_decoder
from huscf_lightning.privacy.attacks.inversion import InversionSettings, invert_d_head
from huscf_lightning.privacy.attacks.probe import ProbeSettings, d_head_probe, g_head_probe
from huscf_lightning.privacy.attacks.views import (
    WEIGHTS_USED,
    AttackError,
    Weights,
    head_path,
    is_attackable,
    observe,
    privacy_of,
)
from huscf_lightning.privacy.spec import PrivacySpec

log = logging.getLogger(__name__)

TEST_SPLIT = "test_split"


@dataclass(frozen=True)
class AttackSettings:
    """How hard the server attacks.

    ``batch_size``: the client batch attacked (the training batch; the server's own batches have the same size,
    since train-mode batch norm makes an activation depend on its batch). ``public``: the labelled images the
    server holds for the decoder and the D-head probe: ``"test_split"`` (the attacked client's domain's test split,
    disjoint from every client's training data) or a domain's name (its test split). ``seed`` drives the batch
    drawn, the server's noise and every attack's initialisation (the initial weights are the run's own). ``classifier_epochs`` and
    ``classifier_cache``: the domain classifier that judges the reconstructions (`domain_classifier`).
    ``clients_per_domain``: attack only the first that many attackable clients of each domain (None: all);
    ``at_initialisation``: also attack the untrained networks (`attack_at_initialisation`, in `record.attack_run`).
    """

    batch_size: int = 64
    inversion: InversionSettings = field(default_factory=InversionSettings)
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    public: str = TEST_SPLIT
    seed: int = 0
    classifier_epochs: int = DEFAULT_CLASSIFIER_EPOCHS
    classifier_cache: str = DEFAULT_CACHE_DIR
    clients_per_domain: int | None = None
    at_initialisation: bool = True

    def validate(self) -> None:
        """Raise an `AttackError` naming the fix for settings no attack can use."""
        if not (isinstance(self.batch_size, int) and self.batch_size >= 2):
            raise AttackError(
                f"AttackSettings.batch_size must be an int >= 2 (the heads' batch norms need two images); got "
                f"{self.batch_size!r}. Use the run's data.batch_size."
            )
        if self.clients_per_domain is not None and not (isinstance(self.clients_per_domain, int) and self.clients_per_domain >= 1):
            raise AttackError(
                f"AttackSettings.clients_per_domain must be a whole number >= 1, or None for every client; got "
                f"{self.clients_per_domain!r}."
            )
        self.inversion.validate()
        self.decoder.validate()
        self.probe.validate()


def attack_model(model: nn.Module, datamodule: Any, settings: AttackSettings | None = None,
                 clients: list[int] | None = None, privacy: PrivacySpec | None = None) -> list[dict[str, Any]]:
    """One row per attacked client of what the server learns from its traffic after training.

    ``clients``: by default every client whose cut sends the server a head activation of both networks (all of
    them in a split run; each takes 10 to 20 s on a CPU core at quarter width). ``privacy``: the defences to
    assume, by default the model's own ``model.privacy``.
    """
    spec = privacy_of(model, privacy)
    attacker = "client" if not spec.masked_aggregation else "unrelated" if spec.private_initialisation else "initial"
    return _attack(model, datamodule, settings, clients, spec, "client", attacker, "trained")


def attack_at_initialisation(model: nn.Module, datamodule: Any, settings: AttackSettings | None = None,
                             clients: list[int] | None = None, privacy: PrivacySpec | None = None
                             ) -> list[dict[str, Any]]:
    """`attack_model`'s rows against the run's networks at initialisation on the same plan (the traffic computed
    with the initial weights, which the server knows, so it attacks with exactly those)."""
    spec = privacy_of(model, privacy)
    # private initialisation: the clients' initial heads are unknown to the server, as an unrelated network is
    known = "unrelated" if spec.private_initialisation else "initial"
    return _attack(model, datamodule, settings, clients, spec, known, known, "initialisation")


def _attack(model: nn.Module, datamodule: Any, settings: AttackSettings | None, clients: list[int] | None,
            spec: PrivacySpec, traffic: Weights, attacker: Weights, stage: str) -> list[dict[str, Any]]:
    settings = settings or AttackSettings()
    settings.validate()
    if clients is None:
        clients = [i for i in range(model.num_clients) if is_attackable(model, i)]
        if settings.clients_per_domain is not None:
            taken: dict[str, int] = {}
            chosen = []
            for i in clients:
                domain = model.client_domains[i]
                if taken.get(domain, 0) < settings.clients_per_domain:
                    taken[domain] = taken.get(domain, 0) + 1
                    chosen.append(i)
            clients = chosen
        if not clients:
            raise AttackError(
                "No client of this model sends the server head activations of both networks (every cut keeps a "
                "whole network on one side, or the model has no clients yet), so there is no traffic to attack."
            )
    classifiers: dict[str, SmallCNN] = {}
    rows = []
    for client in clients:
        started = time.perf_counter()
        row = _attack_client(model, datamodule, client, settings, spec, traffic, attacker, classifiers)
        row = {"stage": stage, **row, "seconds": round(time.perf_counter() - started, 2)}
        log.info("attacked client %d (%s, %s): inversion %.1f dB, decoder %.1f dB (mean image %.1f dB), labels "
                 "%.2f / G probe %.2f / D probe %.2f (chance %.2f) in %.1f s", client, stage, row["weights_used"],
                 row["inversion_psnr"], row["decoder_psnr"], row["psnr_mean_image"], row["inversion_label_accuracy"],
                 row["g_probe_accuracy"], row["d_probe_accuracy"], row["chance"], row["seconds"])
        rows.append(row)
    return rows


def _public_data(datamodule: Any, domain: str, public: str) -> tuple[DomainData, str]:
    """The domain whose test split the server holds, and how a report names it."""
    name = domain if public == TEST_SPLIT else public
    if name in datamodule.domain_names:
        data = datamodule.domain_data(name)
    else:
        data = load_domain(name, seed=datamodule.seed)
    return data, f"{name} test split"


def _real_batch(datamodule: Any, client: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random batch of the client's own training data (its rows are sorted by class: a slice is not a
    batch the client would send)."""
    images, labels = datamodule.client_data(client)
    if images.shape[0] < batch_size:
        raise AttackError(
            f"Client {client} holds {images.shape[0]} training images, fewer than AttackSettings.batch_size="
            f"{batch_size}; attack with a batch size of at most {images.shape[0]} (the run's data.batch_size)."
        )
    rows = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed + client))[:batch_size]
    return images[rows], labels[rows]


def _image_scores(images: Tensor, real: Tensor) -> tuple[float, float]:
    """(PSNR, SSIM) of reconstructions against the real batch, on [-1, 1] images (data range 2)."""
    images, real = images.detach().float().cpu(), real.float().cpu()
    psnr = peak_signal_noise_ratio(images, real, data_range=2.0)
    ssim = structural_similarity_index_measure(images, real, data_range=2.0)
    return float(psnr), float(ssim)


def _attack_client(model: nn.Module, datamodule: Any, client: int, settings: AttackSettings, spec: PrivacySpec,
                   traffic: Weights, attacker: Weights, classifiers: dict[str, SmallCNN]) -> dict[str, Any]:
    seed, batch_size = settings.seed, settings.batch_size
    domain = model.client_domains[client]
    # "initial" weights are the run's own initialisation, which the server knows (`views.initial_network`)
    # and "unrelated" ones are seeded apart: the clients' private initialisation, and the server's guess at it
    traffic_seed, attacker_seed = (seed + 101, seed + 202) if attacker == "unrelated" else (None, None)
    d_client, g_client = (head_path(model, net, client, traffic, traffic_seed) for net in ("D", "G"))
    d_head, g_head = (head_path(model, net, client, attacker, attacker_seed) for net in ("D", "G"))
    reference = next(iter(d_client.parameters()))
    device, dtype = reference.device, reference.dtype
    real, labels = _real_batch(datamodule, client, batch_size, seed)
    real, labels = real.to(device=device, dtype=dtype), labels.to(device)

    # what the server receives from the client's step on this batch
    noise = torch.Generator().manual_seed(seed + 7)
    d_seen = observe(d_client, real, labels, spec, noise)
    z = torch.randn(batch_size, model.z_dim, generator=torch.Generator().manual_seed(seed + 11), dtype=dtype)
    g_seen = observe(g_client, z.to(device), labels, spec, noise)

    public, public_name = _public_data(datamodule, domain, settings.public)
    inverted = invert_d_head(d_head, d_seen, model.num_classes, real.shape[1:], settings.inversion, seed)
    decoder = train_decoder(d_head, public.test_images, public.test_labels, batch_size, spec, settings.decoder, seed)
    decoded = decode(decoder, d_seen)
    g_probe = g_head_probe(g_head, model.z_dim, model.num_classes, g_seen, labels, batch_size, spec,
                           settings.probe, seed)
    d_probe = d_head_probe(d_head, public.test_images, public.test_labels, model.num_classes, d_seen, labels,
                           batch_size, spec, settings.probe, seed)

    if domain not in classifiers:
        classifiers[domain] = domain_classifier(datamodule.domain_data(domain), settings.classifier_cache,
                                                settings.classifier_epochs)[0]
    classifier, classes = classifiers[domain], datamodule.domain_data(domain).num_classes
    labels_cpu = labels.cpu()

    def class_accuracy(images: Tensor) -> float:
        return classifier_accuracy(classifier, images.detach().float().cpu(), labels_cpu, classes)

    mean_image = public.test_images.float().mean(dim=0, keepdim=True).expand_as(real)
    inversion_psnr, inversion_ssim = _image_scores(inverted.images, real)
    decoder_psnr, decoder_ssim = _image_scores(decoded, real)
    return {
        "client": client,
        "domain": domain,
        "d_head": model.plan.cuts[client].d_head,
        "g_head": model.plan.cuts[client].g_head,
        "weights_used": WEIGHTS_USED[attacker],
        "noise_multiplier": spec.noise_multiplier,
        "masked_aggregation": spec.masked_aggregation,
        "public": public_name,
        "inversion_psnr": inversion_psnr,
        "inversion_ssim": inversion_ssim,
        "decoder_psnr": decoder_psnr,
        "decoder_ssim": decoder_ssim,
        "psnr_mean_image": _image_scores(mean_image, real)[0],
        "real_class_accuracy": class_accuracy(real),
        "inversion_class_accuracy": class_accuracy(inverted.images),
        "decoder_class_accuracy": class_accuracy(decoded),
        "inversion_label_accuracy": float(multiclass_accuracy(inverted.labels, labels, model.num_classes,
                                                              average="micro")),
        "g_probe_accuracy": g_probe.accuracy,
        "d_probe_accuracy": d_probe.accuracy,
        "chance": g_probe.chance,
    }
