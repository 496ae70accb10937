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
from .plan import PlanError
from .profile import GanProfile

D_PASSES = 3


def whole_network_latency(placement: str, gan: GanProfile, profiles: ProfileSet, client_profiles: Sequence[str]) -> dict:
    """``latency_s`` of one iteration and its ``breakdown`` (seconds) for a whole-network placement."""
    g, d = gan.generator, gan.discriminator
    g_work = sum(g.forward_flops) + sum(g.backward_flops)
    d_work = D_PASSES * (sum(d.forward_flops) + sum(d.backward_flops))
    server = profiles.server.flops_per_s
    devices = [profiles.device(name) for name in client_profiles]
    k = len(devices)
    if placement == "client":
        compute = [(g_work + d_work) / dev.flops_per_s for dev in devices]
        latency = max(compute)
        breakdown = {"client_compute_s": latency}
    elif placement == "md_gan":
        image_bytes = g.output_bytes[-1]
        g_forward = k * sum(g.forward_flops) / server
        g_backward = k * sum(g.backward_flops) / server
        per_client = [
            image_bytes / profiles.server.rate_bytes_per_s + d_work / dev.flops_per_s + image_bytes / dev.rate_bytes_per_s
            for dev in devices
        ]
        latency = g_forward + max(per_client) + g_backward
        breakdown = {"server_compute_s": g_forward + g_backward, "slowest_client_s": max(per_client)}
    elif placement == "central":
        latency = k * (g_work + d_work) / server
        breakdown = {"server_compute_s": latency}
    else:
        raise PlanError(f"No whole-network latency for placement {placement!r}; use client, md_gan or central.")
    return {"latency_s": float(latency), "breakdown": {**breakdown, "iteration_s": float(latency)}}
