"""Lightning callbacks of a HuSCF-GAN run, in the order they must act at a round end:
exchange accounting, clustering, aggregation, evaluation, sample grids."""

from __future__ import annotations

import lightning.pytorch as pl

from huscf_lightning.callbacks.aggregation import FederatedAggregation
from huscf_lightning.callbacks.clustering import ClusteringRound
from huscf_lightning.callbacks.exchange import CutLayerExchange
from huscf_lightning.callbacks.run_record import RunRecord
from huscf_lightning.callbacks.samples import SampleGrids

__all__ = [
    "ClusteringRound",
    "CutLayerExchange",
    "FederatedAggregation",
    "RunRecord",
    "SampleGrids",
    "default_callbacks",
]


def default_callbacks(module: pl.LightningModule) -> list[pl.Callback]:
    """The callbacks a HuSCFGAN installs for its federation and evaluation settings."""
    fed, ev = module.federation, module.evaluation
    clustering = None
    if fed.mode != "fedavg":
        clustering = ClusteringRound(k=fed.k, k_range=tuple(fed.k_range), seed=module.seed)
    callbacks: list[pl.Callback] = [RunRecord(), CutLayerExchange()]
    if clustering is not None:
        callbacks.append(clustering)
    callbacks.append(FederatedAggregation(fed.mode, fed.alpha, fed.warmup_rounds, clustering))
    if ev.sample_grids:
        callbacks.append(SampleGrids(seed=module.seed))
    return callbacks
