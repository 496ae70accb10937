"""What a curious server observes of a client, and the head blocks it can attack that traffic with.

The server receives client ``i``'s head activations: the output of its discriminator head on its real batch and
of its generator head on its noise and labels, both computed in train mode (batch norm on the batch's own
statistics), with `clip_and_noise` applied first when the run's noise defence is on. At every aggregation it
also reads the client's head weights, unless ``masked_aggregation`` hides them: it then knows only the initial
weights, the run's own initialisation rebuilt from its seed (`initial_network`). Everything here works on
copies: the model is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from huscf_lightning.errors import HuSCFError
from huscf_lightning.nets import BlockNetwork
from huscf_lightning.privacy.noise import clip_and_noise
from huscf_lightning.privacy.spec import PrivacySpec

Network = Literal["G", "D"]
Weights = Literal["client", "initial", "unrelated"]

WEIGHTS_USED = {"client": "client weights at last aggregation", "initial": "initial weights",
                "unrelated": "an unrelated initialisation"}
"""How a report names the head weights an attack used."""


class AttackError(HuSCFError, ValueError):
    """An attack that cannot run on the model or data given; the message names the fix."""


class HeadPath(nn.Module):
    """A client's head: blocks ``[0, head)`` of one network; the first takes ``(x, labels)``, the others ``x``."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        x = self.blocks[0](x, labels)
        for block in self.blocks[1:]:
            x = block(x)
        return x


def privacy_of(model: nn.Module, override: PrivacySpec | None = None) -> PrivacySpec:
    """The defences the attacked run used: ``override`` if given, else ``model.privacy``, else none."""
    if override is not None:
        return override
    return getattr(model, "privacy", None) or PrivacySpec()


def _check_model(model: nn.Module) -> None:
    if getattr(model, "plan", None) is None or model.G is None or model.D is None:
        raise AttackError(
            "The model has no clients yet, so there is no traffic to attack; train it, load it from a checkpoint "
            "(huscf_lightning.engine.saved_run.load_run) or call model.configure_clients(...) first."
        )


def _check_client(model: nn.Module, client: int) -> None:
    _check_model(model)
    if not 0 <= client < model.num_clients:
        raise AttackError(f"Client {client} does not exist; the model has clients 0..{model.num_clients - 1}.")


def head_size(model: nn.Module, network: Network, client: int) -> int:
    """Blocks of ``network`` that ``client`` runs before its activation reaches the server."""
    _check_client(model, client)
    if network not in ("G", "D"):
        raise AttackError(f"network must be 'G' (the generator) or 'D' (the discriminator); got {network!r}.")
    return model.plan.cuts[client].network(network)[0]


def is_attackable(model: nn.Module, client: int) -> bool:
    """Whether ``client`` sends head activations of both networks to the server (a split, not a whole network)."""
    _check_client(model, client)
    for network in ("G", "D"):
        head, tail = model.plan.cuts[client].network(network)
        if head == 0 or head + tail >= getattr(model, network).num_blocks:
            return False
    return True


def initial_network(model: nn.Module, network: Network, seed: int | None = None) -> BlockNetwork:
    """``network``'s initial weights (the global RNG is left as it was), on the model's device and dtype. With
    ``seed`` None, the run's own: rebuilt as the CLI built them, the generator then the discriminator right after
    ``seed_everything(model.seed)`` (a shared initialisation is what a server knows even when it never sees the
    trained weights); with a ``seed``, an unrelated network seeded by it."""
    templates = {"G": model.generator_template, "D": model.discriminator_template}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model.seed if seed is None else seed)
        if seed is None:
            built = {name: type(t)(**t.init_args) for name, t in templates.items()}  # dict order: G, then D
            fresh = built[network]
        else:
            fresh = type(templates[network])(**templates[network].init_args)
    reference = next(iter(getattr(model, network).parameters()))
    return fresh.to(device=reference.device, dtype=reference.dtype)


def head_path(model: nn.Module, network: Network, client: int, weights: Weights = "client", seed: int | None = None
              ) -> HeadPath:
    """``client``'s head of ``network`` as the attacker holds it: deep copies of the client's blocks as sent at the
    last aggregation (``weights="client"``) or initial ones (``"initial"``: the run's own with ``seed`` None, else
    an unrelated network seeded by ``seed``; `initial_network`), or ``"unrelated"`` ones (what a server has when
    each client drew its own private initialisation: a network seeded by ``seed``), in train mode, with gradients off. Raises `AttackError` when the client sends no head activation of that network."""
    head = head_size(model, network, client)
    if not is_attackable(model, client):
        raise AttackError(
            f"Client {client}'s cut {model.plan.cuts[client].as_tuple()} does not send the server a head activation of "
            "both networks (a head of 0 blocks, or a whole network kept on one side), so there is none to attack; "
            "attack a client whose cut splits both networks (huscf_lightning.privacy.attacks.is_attackable)."
        )
    if weights not in WEIGHTS_USED:
        raise AttackError(f"weights must be one of {list(WEIGHTS_USED)}; got {weights!r}.")
    source = {  # the weights the server saw at aggregation, or initial ones
        "client": lambda: [getattr(model, network).client_block(client, j) for j in range(head)],
        "initial": lambda: [copy.deepcopy(block) for block in initial_network(model, network, seed).blocks[:head]],
        "unrelated": lambda: [copy.deepcopy(block) for block in initial_network(model, network, seed or 1).blocks[:head]],
    }
    blocks = source[weights]()
    path = HeadPath(blocks).train()
    path.requires_grad_(False)
    return path


def observe(head: nn.Module, inputs: Tensor, labels: Tensor, spec: PrivacySpec, generator: torch.Generator | None
            ) -> Tensor:
    """What the server receives when ``head`` runs on this batch: its train-mode output, clipped and noised when
    ``spec`` turns the noise on (noise from ``generator``). Runs on a copy, outside autograd."""
    head = copy.deepcopy(head).train()
    with torch.no_grad():
        activation = head(inputs, labels)
        if spec.noisy:
            activation = clip_and_noise(activation, spec.clip, spec.noise_multiplier, generator)
    return activation


def observed_d_head(model: nn.Module, client: int, images: Tensor, labels: Tensor,
                    generator: torch.Generator | None = None, weights: Weights = "client", seed: int | None = None,
                    privacy: PrivacySpec | None = None) -> Tensor:
    """The D-head activation the server receives for ``client``'s real batch (``images`` in [-1, 1], integer
    ``labels``), through the client's own head (or, ``weights="initial"``, the seeded initial one)."""
    head = head_path(model, "D", client, weights, seed)
    return observe(head, images, labels, privacy_of(model, privacy), generator)


def observed_g_head(model: nn.Module, client: int, z: Tensor, labels: Tensor,
                    generator: torch.Generator | None = None, weights: Weights = "client", seed: int | None = None,
                    privacy: PrivacySpec | None = None) -> Tensor:
    """The G-head activation the server receives for ``client``'s noise ``z`` (B, z_dim) and ``labels``."""
    head = head_path(model, "G", client, weights, seed)
    return observe(head, z, labels, privacy_of(model, privacy), generator)


@contextmanager
def soft_labels(module: nn.Module, probs: Tensor) -> Iterator[None]:
    """Every `nn.Embedding` inside ``module`` returns ``probs @ embedding.weight`` instead of its lookup, so a
    head conditioned through embeddings runs on soft labels ``probs`` (B, num_classes), differentiably; pass any
    integer labels of the batch's size. With one-hot ``probs`` the output equals the integer-label forward."""
    embeddings = [m for m in module.modules() if isinstance(m, nn.Embedding)]
    if not embeddings:
        raise AttackError(
            f"{type(module).__name__} has no nn.Embedding, so soft labels cannot enter it; the attacks need heads "
            "whose first block embeds the labels with nn.Embedding (as the reference networks do)."
        )
    for embedding in embeddings:
        if probs.shape[-1] != embedding.num_embeddings:
            raise AttackError(
                f"Soft labels of {probs.shape[-1]} classes do not fit an embedding of {embedding.num_embeddings}; "
                "pass probabilities over the model's num_classes."
            )
    hooks = [m.register_forward_hook(lambda m, args, out: probs @ m.weight) for m in embeddings]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
