"""Networks written as blocks: the contract every splittable network follows (`blocks`) and the paper's
reference networks (`reference`). Config class paths name them here, e.g. ``huscf_lightning.nets.ReferenceGenerator``."""

from huscf_lightning.nets.blocks import BlockNetwork, LabelledBlock, NetworkError
from huscf_lightning.nets.reference import ReferenceDiscriminator, ReferenceGenerator

__all__ = ["BlockNetwork", "LabelledBlock", "NetworkError", "ReferenceDiscriminator", "ReferenceGenerator"]
