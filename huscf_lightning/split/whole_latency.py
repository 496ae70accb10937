"""Modeled iteration latency of the baselines' whole-network placements, under the same device profiles
and per-block work as HuSCF-GAN's split latency model (METHOD.md, "Cut selection"), so the latency
column of a comparison compares like with like.

- ``client`` (FedGAN, local): every client runs all of G and D itself: G forward and backward plus
  three D passes (fakes, reals, the G step), nothing crosses during an iteration.
- ``md_gan``: the server runs G forward for every client's batch, sends each client its generated
  batch, the client runs its three D passes and sends back the gradient of the images; then the
  server runs G backward for every client.
- ``central``: the server runs everything for every client's batch (the data was uploaded once).
Weights exchanged at round ends are not per iteration and are counted by the wire, not here.
"""

from __future__ import annotations

from collections.abc import Sequence

from .devices import ProfileSet
from .profile import GanProfile

D_PASSES = 3


def _works(gan: GanProfile) -> tuple[float, float]:
    """FLOPs of one iteration's G (forward and backward) and of its three D passes, for one client's batch."""
    g, d = gan.generator, gan.discriminator
    return sum(g.forward_flops) + sum(g.backward_flops), D_PASSES * (sum(d.forward_flops) + sum(d.backward_flops))


def _report(latency: float, breakdown: dict[str, float]) -> dict:
    return {"latency_s": float(latency), "breakdown": {**breakdown, "iteration_s": float(latency)}}


def on_clients_latency(gan: GanProfile, profiles: ProfileSet, client_profiles: Sequence[str]) -> dict:
    """``client`` (FedGAN, local): the slowest client's compute of a whole G and D iteration."""
    g_work, d_work = _works(gan)
    latency = max((g_work + d_work) / profiles.device(name).flops_per_s for name in client_profiles)
    return _report(latency, {"client_compute_s": latency})


def md_gan_latency(gan: GanProfile, profiles: ProfileSet, client_profiles: Sequence[str]) -> dict:
    """``md_gan``: the server's G forward for every client, the slowest client's round trip (images down, its
    three D passes, the images' gradient up), then the server's G backward for every client."""
    g = gan.generator
    _, d_work = _works(gan)
    server = profiles.server.flops_per_s
    devices = [profiles.device(name) for name in client_profiles]
    image_bytes = g.output_bytes[-1]
    g_forward = len(devices) * sum(g.forward_flops) / server
    g_backward = len(devices) * sum(g.backward_flops) / server
    per_client = [
        image_bytes / profiles.server.rate_bytes_per_s + d_work / dev.flops_per_s + image_bytes / dev.rate_bytes_per_s
        for dev in devices
    ]
    latency = g_forward + max(per_client) + g_backward
    return _report(latency, {"server_compute_s": g_forward + g_backward, "slowest_client_s": max(per_client)})


def central_latency(gan: GanProfile, profiles: ProfileSet, client_profiles: Sequence[str]) -> dict:
    """``central``: the server computes every client's batch (the data was uploaded once)."""
    g_work, d_work = _works(gan)
    latency = len(client_profiles) * (g_work + d_work) / profiles.server.flops_per_s
    return _report(latency, {"server_compute_s": latency})
