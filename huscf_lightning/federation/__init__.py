"""Federation: clustering clients, KLD scores, aggregation weights and weighted averaging (pure
functions over tensors), and the strategies that choose between them at a round end."""

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
from huscf_lightning.federation.strategy import (
    Clustered,
    FedAvg,
    FederationStrategy,
    KLDClustered,
    build_strategy,
    known_strategies,
    register_strategy,
)
from huscf_lightning.federation.weights import (
    AggregationWeights,
    WeightsError,
    clustered_aggregation,
    fedavg_aggregation,
    fedavg_weights,
    group_weights,
    kld_clustered_aggregation,
    size_weights,
)

__all__ = [
    "AggregationWeights",
    "AveragingError",
    "ClusterResult",
    "Clustered",
    "ClusteringError",
    "FedAvg",
    "FederationStrategy",
    "KLDClustered",
    "KLDError",
    "WeightsError",
    "adjusted_rand",
    "average_stacked",
    "average_states",
    "build_strategy",
    "canonical_labels",
    "cluster_clients",
    "clustered_aggregation",
    "fedavg_aggregation",
    "feature_kld_scores",
    "fedavg_weights",
    "group_weights",
    "kld_clustered_aggregation",
    "kld_scores",
    "known_strategies",
    "register_strategy",
    "size_weights",
    "spatial_log_softmax",
    "spatial_softmax",
]
