"""Utility of generated data: how well a classifier trained only on it does on real test data.

This is METHOD.md's downstream measure: if the generator captured each class, the small CNN
trained on its samples should classify the real test split nearly as well as one trained on
real data.
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multiclass_specificity,
)

from huscf_lightning.metrics.classifier import predict_logits, train_classifier
from huscf_lightning.metrics.errors import MetricInputError

UTILITY_METRICS = ("accuracy", "precision", "recall", "f1", "fpr")


def classification_metrics(preds: Tensor, target: Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy, macro precision, recall, F1 and macro false-positive rate of predicted labels.

    The macro false-positive rate is the mean over classes of FP / (FP + TN), i.e. one minus the
    per-class specificity, averaged.
    """
    if preds.shape != target.shape or preds.dim() != 1:
        raise MetricInputError(
            f"preds and target must be 1-D label tensors of the same length; got {tuple(preds.shape)} "
            f"and {tuple(target.shape)}. Take argmax over the class axis of the logits first."
        )
    specificity = multiclass_specificity(preds, target, num_classes, average="none")
    return {
        "accuracy": float(multiclass_accuracy(preds, target, num_classes, average="micro")),
        "precision": float(multiclass_precision(preds, target, num_classes, average="macro")),
        "recall": float(multiclass_recall(preds, target, num_classes, average="macro")),
        "f1": float(multiclass_f1_score(preds, target, num_classes, average="macro")),
        "fpr": float((1 - specificity).mean()),
    }


def utility(
    generated_images: Tensor,
    generated_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    num_classes: int,
    epochs: int = 15,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
) -> dict[str, float]:
    """Train the METHOD.md CNN (Adam) on generated samples and score it on the real test split."""
    device = generated_images.device
    model = train_classifier(
        generated_images.detach(),
        generated_labels.to(device),
        num_classes,
        epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
    )
    preds = predict_logits(model, test_images.to(device).float()).argmax(dim=1)
    return classification_metrics(preds, test_labels.to(device), num_classes)
