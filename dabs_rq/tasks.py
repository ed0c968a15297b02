"""Transfer tasks: how a dataset's labels become a head size, a loss and a torchmetrics metric.

A domain YAML picks one with ``task: {_target_: dabs_rq.tasks.<Kind>, ...}``; adding a
kind of task means adding a class here, never editing the runner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor


class Task:
    """Base class: ``num_outputs`` logits, a loss on (logits, labels) and a fresh metric."""

    num_outputs: int
    metric_name: str
    #: reported value = metric * scale (the paper reports percentages)
    scale: float = 100.0

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def metric(self) -> torchmetrics.Metric:
        raise NotImplementedError

    def metric_inputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return logits, labels

    def check_labels(self, labels: Tensor) -> str | None:
        """What is wrong with a split's labels for this task (None: nothing)."""
        return None

    def describe(self) -> dict:
        return {"kind": type(self).__name__, "num_outputs": self.num_outputs, "metric": self.metric_name}


class MulticlassTask(Task):
    """Single-label classification: cross-entropy and top-1 accuracy."""

    metric_name = "accuracy"

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_outputs = self.num_classes = int(num_classes)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels.long())

    def metric(self) -> torchmetrics.Metric:
        return torchmetrics.classification.MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    def check_labels(self, labels: Tensor) -> str | None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            return (f"labels run from {int(labels.min())} to {int(labels.max())} but task.num_classes is "
                    f"{self.num_classes} (labels must be 0 .. num_classes - 1)")
        return None

    def metric_inputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return logits, labels.long()


class BinaryTask(Task):
    """Binary classification with one logit: BCE and accuracy at probability 0.5 (DABS)."""

    metric_name = "accuracy"
    num_outputs = 1

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits.view(-1), labels.float().view(-1))

    def metric(self) -> torchmetrics.Metric:
        return torchmetrics.classification.BinaryAccuracy(threshold=0.5)

    def metric_inputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(logits.view(-1)), labels.long().view(-1)


class BinaryCorrelationTask(BinaryTask):
    """One logit trained with BCE, scored by a correlation over the whole split.

    ``pearson`` reproduces DABS's CoLA: Pearson r between the raw logit and the 0/1 label
    (not the usual Matthews correlation); ``matthews`` gives GLUE's MCC of the thresholded
    prediction instead.
    """

    METRICS = ("pearson", "matthews")

    def __init__(self, metric: str = "pearson") -> None:
        if metric not in self.METRICS:
            raise ValueError(f"metric must be one of {', '.join(self.METRICS)}; got {metric!r}")
        self.metric_name = metric

    def metric(self) -> torchmetrics.Metric:
        if self.metric_name == "pearson":
            return torchmetrics.PearsonCorrCoef()
        return torchmetrics.classification.BinaryMatthewsCorrCoef(threshold=0.5)

    def metric_inputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if self.metric_name == "pearson":
            return logits.view(-1).float(), labels.float().view(-1)
        return super().metric_inputs(logits, labels)


class MultilabelTask(Task):
    """Multi-label classification: BCE and macro mean of per-label AUROC (X-ray)."""

    metric_name = "auroc"

    def __init__(self, num_labels: int) -> None:
        self.num_outputs = self.num_labels = int(num_labels)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels.float())

    def metric(self) -> torchmetrics.Metric:
        return torchmetrics.classification.MultilabelAUROC(num_labels=self.num_labels, average="macro")

    def check_labels(self, labels: Tensor) -> str | None:
        if labels.dim() != 2 or labels.shape[1] != self.num_labels:
            return f"labels have shape {tuple(labels.shape)} but task.num_labels is {self.num_labels}"
        return None

    def metric_inputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(logits), labels.long()


class RegressionTask(Task):
    """Scalar regression: MSE loss; Pearson or Spearman correlation (CoLA, STS-B in DABS)."""

    num_outputs = 1
    _METRICS = {"pearson": torchmetrics.PearsonCorrCoef, "spearman": torchmetrics.SpearmanCorrCoef}

    def __init__(self, metric: str = "pearson") -> None:
        if metric not in self._METRICS:
            raise ValueError(f"regression metric must be one of {', '.join(self._METRICS)}; got {metric!r}")
        self.metric_name = metric

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.mse_loss(logits.view(-1), labels.float().view(-1))

    def metric(self) -> torchmetrics.Metric:
        return self._METRICS[self.metric_name]()

    def metric_inputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return logits.view(-1).float(), labels.float().view(-1)
