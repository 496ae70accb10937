"""Splitting block networks across clients and a server, and choosing where to cut."""

from huscf_lightning.split.network import SplitNetwork
from huscf_lightning.split.plan import Cut, PlanError, SplitPlan, valid_head_tails

__all__ = ["Cut", "PlanError", "SplitNetwork", "SplitPlan", "valid_head_tails"]
