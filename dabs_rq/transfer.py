"""Transfer evaluation: a linear head on the frozen encoder's pooled features (DABS protocol).

Two modes (``transfer.mode``, recorded with every result):

* ``online`` (DABS): every step runs the frozen encoder on the raw input; the encoder
  stays in train mode while the head trains, so its dropout is active, as in DABS.
* ``cached_features`` (ours, the fast default for small runs): pooled features are
  computed once with the encoder in eval mode, and the head trains on them for all
  epochs. Same head, loss and metric; no dropout noise on the features.

In both modes the test split is scored after every training epoch, as DABS's validation loop
does; :attr:`LinearProbe.epoch_values` keeps every epoch's value and the runner reports the last.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from dabs_rq.tasks import Task

TRANSFER_MODES = ("cached_features", "online")


class LinearProbe(pl.LightningModule):
    """``Linear(dim, task.num_outputs)`` trained with the task's loss; the encoder never updates.

    With ``encoder=None`` the batches hold ``(features,)`` instead of raw inputs (cached mode).
    """

    def __init__(
        self,
        feature_dim: int,
        task: Task,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.task = task
        self.head = nn.Linear(feature_dim, task.num_outputs)
        self.optimizer_factory = optimizer
        self.encoder = encoder
        if encoder is not None:
            encoder.requires_grad_(False)
        self.train_metric = task.metric()
        self.eval_metric = task.metric()
        #: the test metric after each training epoch (the reported value is the last one)
        self.epoch_values: list[float] = []

    def _logits(self, inputs: Any) -> Tensor:
        if self.encoder is None:
            return self.head(inputs[0])
        with torch.no_grad():
            features = self.encoder(inputs)
        return self.head(features.float())

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, labels = batch
        logits = self._logits(inputs)
        loss = self.task.loss(logits, labels)
        self.train_metric.update(*self.task.metric_inputs(logits.detach(), labels))
        self.log("transfer/train_loss", loss, prog_bar=True, batch_size=labels.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("transfer/train_metric", self.train_metric.compute() * self.task.scale)
        self.train_metric.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Score one batch of the evaluated (test) split; called after every training epoch."""
        inputs, labels = batch
        logits = self._logits(inputs)
        self.log("transfer/val_loss", self.task.loss(logits, labels), batch_size=labels.shape[0])
        self.eval_metric.update(*self.task.metric_inputs(logits, labels))

    def on_validation_epoch_end(self) -> None:
        value = self.eval_metric.compute() * self.task.scale  # gathered over every rank's share
        self.eval_metric.reset()
        self.epoch_values.append(float(value))
        self.log("transfer/val_metric", value, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.head.parameters())
