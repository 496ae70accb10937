"""huscf_lightning: HuSCF-GAN (heterogeneous U-shaped split + KLD-weighted clustered federated
learning of a conditional GAN) as a PyTorch Lightning plugin."""

from huscf_lightning.config import EvaluationSpec, FederationSpec, PlanSpec, PrivacySpec
from huscf_lightning.data import DomainSpec, HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.nets import BlockNetwork, LabelledBlock, ReferenceDiscriminator, ReferenceGenerator
from huscf_lightning.split import Cut, SplitNetwork, SplitPlan
from huscf_lightning.split.wire import Wire, WireError

__all__ = [
    "BlockNetwork",
    "Cut",
    "DomainSpec",
    "EvaluationSpec",
    "FederationSpec",
    "HuSCFDataModule",
    "HuSCFGAN",
    "LabelledBlock",
    "PlanSpec",
    "PrivacySpec",
    "ReferenceDiscriminator",
    "ReferenceGenerator",
    "SplitNetwork",
    "SplitPlan",
    "Wire",
    "WireError",
]
__version__ = "0.1.0"
