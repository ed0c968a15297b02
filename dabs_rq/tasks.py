"""Transfer tasks: how a dataset's labels become a head size, a loss and a torchmetrics metric.

A domain YAML picks one with ``task: {_target_: dabs_rq.tasks.<Kind>, ...}``; adding a
kind of task means adding a class here, never editing the runner.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from dabs_rq.errors import UserError

#: How a correlation metric is aggregated over the evaluated split (``transfer.correlation`` or the
#: task's own ``correlation``): ``batch_mean`` is DABS's value, the correlation of each evaluation
#: batch averaged over the epoch weighted by batch size (Lightning's ``on_epoch`` mean of a per-batch
#: ``torchmetrics.functional`` value, last partial batch included); ``split`` (ours) is one
#: correlation over the whole split.
CORRELATION_AGGREGATES = ("batch_mean", "split")


class BatchMeanCorrelation(torchmetrics.Metric):
    """DABS's correlation metric: ``sum_b n_b * r_b / sum_b n_b`` over the batches given to ``update``.

    A batch of fewer than two samples has no correlation and is left out (DABS would turn the whole
    epoch's value into NaN). States are sums, so DDP ranks combine by adding them.
    """

    full_state_update = False

    def __init__(self, correlation: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.correlation = correlation
        self.add_state("weighted", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        n = preds.shape[0]
        if n < 2:
            return
        self.weighted += n * self.correlation(preds.float(), target.float()).double()
        self.count += n

    def compute(self) -> Tensor:
        return (self.weighted / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


def correlation_metric(name: str, aggregate: str) -> torchmetrics.Metric:
    """A Pearson or Spearman metric aggregated as ``aggregate`` (see :data:`CORRELATION_AGGREGATES`)."""
    if aggregate == "batch_mean":
        function = {
            "pearson": torchmetrics.functional.pearson_corrcoef,
            "spearman": torchmetrics.functional.spearman_corrcoef,
        }[name]
        return BatchMeanCorrelation(function)
    return {"pearson": torchmetrics.PearsonCorrCoef, "spearman": torchmetrics.SpearmanCorrCoef}[name]()


def check_correlation(aggregate: str) -> str:
    if aggregate not in CORRELATION_AGGREGATES:
        raise UserError(f"correlation must be one of {', '.join(CORRELATION_AGGREGATES)}; got {aggregate!r}")
    return aggregate


class Task:
    """Base class: ``num_outputs`` logits, a loss on (logits, labels) and a fresh metric."""

    num_outputs: int
    metric_name: str
    #: reported value = metric * scale (the paper reports percentages)
    scale: float = 100.0
    #: whether the task takes ``correlation`` (how a correlation is aggregated; the runner passes
    #: ``transfer.correlation`` unless the dataset YAML's task sets it)
    uses_correlation: bool = False

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
            raise UserError(f"num_classes must be >= 2, got {num_classes}")
        self.num_outputs = self.num_classes = int(num_classes)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels.long())

    def metric(self) -> torchmetrics.Metric:
        return torchmetrics.classification.MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    def check_labels(self, labels: Tensor) -> str | None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            return (
                f"labels run from {int(labels.min())} to {int(labels.max())} but task.num_classes is "
                f"{self.num_classes} (labels must be 0 .. num_classes - 1)"
            )
        return None

    def metric_inputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return logits, labels.long()


class BinaryTask(Task):
    """Binary classification with one logit: BCE and accuracy at probability 0.5 (DABS)."""

    metric_name = "accuracy"
    num_outputs = 1

    def check_labels(self, labels: Tensor) -> str | None:
        if labels.numel() and not torch.isin(labels.reshape(-1), torch.tensor([0, 1], dtype=labels.dtype)).all():
            found = sorted(set(labels.reshape(-1).tolist()))
            shown = ", ".join(str(v) for v in found[:6]) + (", ..." if len(found) > 6 else "")
            return (
                f"a binary task needs labels 0 and 1, but the labels take {len(found)} values ({shown}); "
                f"use dabs_rq.tasks.MulticlassTask with num_classes: {len(found)}"
            )
        return None

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits.view(-1), labels.float().view(-1))

    def metric(self) -> torchmetrics.Metric:
        return torchmetrics.classification.BinaryAccuracy(threshold=0.5)

    def metric_inputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(logits.view(-1)), labels.long().view(-1)


class BinaryCorrelationTask(BinaryTask):
    """One logit trained with BCE, scored by a correlation.

    ``pearson`` reproduces DABS's CoLA: Pearson r between the raw logit and the 0/1 label
    (not the usual Matthews correlation), aggregated per ``correlation`` (DABS: ``batch_mean``;
    ``split``: one value over the whole split); ``matthews`` gives GLUE's MCC of the thresholded
    prediction over the whole split instead.
    """

    METRICS = ("pearson", "matthews")
    uses_correlation = True

    def __init__(self, metric: str = "pearson", correlation: str = "batch_mean") -> None:
        if metric not in self.METRICS:
            raise UserError(f"metric must be one of {', '.join(self.METRICS)}; got {metric!r}")
        self.metric_name = metric
        self.correlation = check_correlation(correlation)

    def metric(self) -> torchmetrics.Metric:
        if self.metric_name == "pearson":
            return correlation_metric("pearson", self.correlation)
        return torchmetrics.classification.BinaryMatthewsCorrCoef(threshold=0.5)

    def describe(self) -> dict:
        return {**super().describe(), **({"correlation": self.correlation} if self.metric_name == "pearson" else {})}

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
        if labels.numel() and not torch.isin(labels.reshape(-1), torch.tensor([0, 1], dtype=labels.dtype)).all():
            return "a multi-label task needs 0/1 labels (one column per label); fix the labels or the task"
        return None

    def metric_inputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(logits), labels.long()


class RegressionTask(Task):
    """Scalar regression: MSE loss; Pearson or Spearman correlation (STS-B in DABS), aggregated per
    ``correlation`` (DABS: ``batch_mean``; ``split``: one value over the whole split)."""

    num_outputs = 1
    _METRICS = ("pearson", "spearman")
    uses_correlation = True

    def __init__(self, metric: str = "pearson", correlation: str = "batch_mean") -> None:
        if metric not in self._METRICS:
            raise UserError(f"regression metric must be one of {', '.join(self._METRICS)}; got {metric!r}")
        self.metric_name = metric
        self.correlation = check_correlation(correlation)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.mse_loss(logits.view(-1), labels.float().view(-1))

    def check_labels(self, labels: Tensor) -> str | None:
        if labels.dim() > 1 and labels.shape[1:].numel() != 1:
            return f"a regression task needs one score per example, but the labels have shape {tuple(labels.shape)}"
        if labels.numel() and not torch.isfinite(labels.float()).all():
            return "a regression task needs finite scores, but some labels are NaN or infinite"
        return None

    def metric(self) -> torchmetrics.Metric:
        return correlation_metric(self.metric_name, self.correlation)

    def describe(self) -> dict:
        return {**super().describe(), "correlation": self.correlation}

    def metric_inputs(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return logits.view(-1).float(), labels.float().view(-1)
