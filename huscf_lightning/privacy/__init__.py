"""What a curious server can learn, and the defences against it.

The defences sit below the federation (the engine and the aggregation use them): `PrivacySpec` (the
``model.privacy`` section), `masking` (the server sums clients' weights it cannot read), `noise` (clipping and
Gaussian noise on what crosses) and `nopeek` (a distance-correlation penalty). The attacks that measure the
leakage, and so what each defence buys, run on a trained model: `huscf_lightning.privacy.attacks`.
"""

from huscf_lightning.privacy.spec import PrivacySpec

__all__ = ["PrivacySpec"]
