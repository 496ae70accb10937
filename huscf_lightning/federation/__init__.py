"""Federation maths: clustering clients, KLD scores, aggregation weights and weighted averaging.

Pure functions over tensors; the callbacks that collect client states and load the
averages back use them.
"""

from huscf_lightning.federation.averaging import AveragingError, average_stacked, average_states
from huscf_lightning.federation.clustering import (
    ClusteringError,
    ClusterResult,
    adjusted_rand,
    canonical_labels,
    cluster_clients,
)
from huscf_lightning.federation.kld import (
    KLDError,
    feature_kld_scores,
    kld_scores,
    spatial_log_softmax,
    spatial_softmax,
)
from huscf_lightning.federation.weights import (
    AGGREGATION_MODES,
    AggregationWeights,
    WeightsError,
    build_weights,
    fedavg_weights,
    group_weights,
    size_weights,
)

__all__ = [
    "AGGREGATION_MODES",
    "AggregationWeights",
    "AveragingError",
    "ClusterResult",
    "ClusteringError",
    "KLDError",
    "WeightsError",
    "adjusted_rand",
    "average_stacked",
    "average_states",
    "build_weights",
    "canonical_labels",
    "cluster_clients",
    "feature_kld_scores",
    "fedavg_weights",
    "group_weights",
    "kld_scores",
    "size_weights",
    "spatial_log_softmax",
    "spatial_softmax",
]
