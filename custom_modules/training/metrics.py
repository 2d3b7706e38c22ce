"""Evaluation: loss, accuracy and macro precision / recall / F1 of a model on one split."""

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from torch import nn


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits for images in [0, 1] (the model normalises them), in eval mode and fp32."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 (scikit-learn)."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy and macro precision / recall / F1 on one split."""
    logits = predict_logits(model, images)
    loss = F.cross_entropy(logits, labels).item()
    y_true, y_pred = labels.cpu().numpy(), logits.argmax(dim=1).cpu().numpy()
    return {"loss": loss, **classification_metrics(y_true, y_pred)}
