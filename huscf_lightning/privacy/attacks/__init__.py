"""What a curious server can learn from the traffic of HuSCF-GAN's clients (issue 21).

The server follows the protocol but reads everything it handles: every client's head activations (computed on
its real images, and on its noise and labels) and, at every aggregation, the client's head weights. The attacks
here use only that: `views` says what it observes, `inversion` and `decoder` recover the images behind a
discriminator-head activation, `probe` reads the labels off either head, and `report` runs them all on a trained
model (`attack_model`) and on its untrained initialisation (`attack_at_initialisation`).
"""

from huscf_lightning.privacy.attacks.decoder import ActivationDecoder, DecoderSettings, decode, train_decoder
from huscf_lightning.privacy.attacks.inversion import Inversion, InversionSettings, invert_d_head, total_variation
from huscf_lightning.privacy.attacks.probe import (
    LinearProbe,
    ProbeResult,
    ProbeSettings,
    d_head_probe,
    g_head_probe,
    probe_accuracy,
    train_probe,
)
from huscf_lightning.privacy.attacks.report import AttackSettings, attack_at_initialisation, attack_model
from huscf_lightning.privacy.attacks.views import (
    WEIGHTS_USED,
    AttackError,
    HeadPath,
    head_path,
    head_size,
    initial_network,
    is_attackable,
    observe,
    observed_d_head,
    observed_g_head,
    privacy_of,
    soft_labels,
)

__all__ = [
    "WEIGHTS_USED",
    "ActivationDecoder",
    "AttackError",
    "AttackSettings",
    "DecoderSettings",
    "HeadPath",
    "Inversion",
    "InversionSettings",
    "LinearProbe",
    "ProbeResult",
    "ProbeSettings",
    "attack_at_initialisation",
    "attack_model",
    "d_head_probe",
    "decode",
    "g_head_probe",
    "head_path",
    "head_size",
    "initial_network",
    "invert_d_head",
    "is_attackable",
    "observe",
    "observed_d_head",
    "observed_g_head",
    "privacy_of",
    "probe_accuracy",
    "soft_labels",
    "total_variation",
    "train_decoder",
    "train_probe",
]
