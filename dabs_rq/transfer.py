"""Transfer evaluation: a linear head on the frozen encoder's pooled features (DABS protocol).

Two modes (``transfer.mode``, recorded with every result):

* ``online`` (DABS): every step runs the frozen encoder on the raw input; the encoder
  stays in train mode while the head trains, so its dropout is active, as in DABS.
* ``cached_features`` (ours, the fast default for small runs): pooled features are
  computed once with the encoder in eval mode, and the head trains on them for all
  epochs. Same head, loss and metric; no dropout noise on the features.

In both modes the test split is scored after every training epoch, as DABS's validation loop
does; :attr:`LinearProbe.epoch_values` keeps every epoch's value and the runner reports the last.
Metrics are logged under ``transfer/<dataset>/`` so every transfer dataset of a job has its own
namespace in the job's logger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from dabs_rq.data.tensor_dataset import TensorInputsDataset, make_loader
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
        dataset: str = "probe",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "dataset": dataset,
                "feature_dim": feature_dim,
                "task": task.describe(),
                "mode": "cached_features" if encoder is None else "online",
            }
        )
        self.task = task
        self.prefix = f"transfer/{dataset}"
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
        self.log(f"{self.prefix}/train_loss", loss, prog_bar=True, batch_size=labels.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self.log(f"{self.prefix}/train_metric", self.train_metric.compute() * self.task.scale)
        self.train_metric.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Score one batch of the evaluated (test) split; called after every training epoch."""
        inputs, labels = batch
        logits = self._logits(inputs)
        self.log(f"{self.prefix}/test_loss", self.task.loss(logits, labels), batch_size=labels.shape[0])
        self.eval_metric.update(*self.task.metric_inputs(logits, labels))

    def on_validation_epoch_end(self) -> None:
        value = self.eval_metric.compute() * self.task.scale  # gathered over every rank's share
        self.eval_metric.reset()
        self.epoch_values.append(float(value))
        self.log(f"{self.prefix}/test_metric", value, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.head.parameters())


class FeatureExtractor(pl.LightningModule):
    """The frozen encoder's pooled features of each batch, for ``trainer.predict`` (eval mode, no
    gradients, the trainer's precision and device)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def predict_step(self, batch: Any, batch_idx: int) -> tuple[Tensor, Tensor]:
        inputs, labels = batch
        return self.encoder(inputs).float(), labels


def extract_features(
    trainer: pl.Trainer, encoder: nn.Module, dataset: Dataset, batch_size: int, num_workers: int = 0
) -> TensorInputsDataset:
    """Pooled features of every example of ``dataset``, in order, on every rank (cached transfer mode).

    Under DDP each rank encodes its share of the batches (batch b on rank b mod N, with
    ``trainer.predict`` and its progress bar) and the shares are gathered, so the work is split
    over the devices and every rank ends with the whole split's features, none repeated or lost.
    """
    rank, world = trainer.global_rank, trainer.world_size
    loader = make_loader(
        dataset,
        batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        rank=rank,
        world_size=world,
    )
    outputs = trainer.predict(FeatureExtractor(encoder), dataloaders=loader, return_predictions=True)
    features = torch.cat([f for f, _ in outputs]) if outputs else torch.zeros(0, encoder.dim)
    labels = torch.cat([y for _, y in outputs]) if outputs else torch.as_tensor(getattr(dataset, "labels", []))[:0]
    if world > 1:
        features, labels = _gather_shares(trainer, features, labels, len(dataset), batch_size)
    return TensorInputsDataset([features], labels)


def _gather_shares(
    trainer: pl.Trainer, features: Tensor, labels: Tensor, n: int, batch_size: int
) -> tuple[Tensor, Tensor]:
    """Every rank's rows of the round-robin batches, gathered back into the split's order."""
    world = trainer.world_size
    batches = math.ceil(n / batch_size)
    rows = math.ceil(batches / world) * batch_size  # the longest share, padded to it
    device = trainer.strategy.root_device

    def gathered(local: Tensor) -> Tensor:
        padded = local.new_zeros((rows, *local.shape[1:]))
        padded[: len(local)] = local
        return trainer.strategy.all_gather(padded.to(device)).cpu()  # [world, rows, ...]

    all_features, all_labels = gathered(features), gathered(labels)
    order = [(b % world, (b // world) * batch_size, min(batch_size, n - b * batch_size)) for b in range(batches)]
    return (
        torch.cat([all_features[r, start : start + size] for r, start, size in order]),
        torch.cat([all_labels[r, start : start + size] for r, start, size in order]),
    )
