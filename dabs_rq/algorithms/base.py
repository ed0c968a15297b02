"""What every pretraining algorithm shares: the encoder, the optimizer, the step loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def info_nce(queries: Tensor, keys: Tensor, temperature: float, targets: Tensor | None = None) -> Tensor:
    """In-batch contrastive loss between L2-normalised ``queries`` and ``keys``.

    Row i's positive is key ``targets[i]`` (default: key i); every other key is a negative.
    """
    logits = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T / temperature
    if targets is None:
        targets = torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(logits, targets)


class PretrainingAlgorithm(pl.LightningModule):
    """A LightningModule that pretrains ``encoder`` with ``loss(inputs)``.

    Subclasses implement :meth:`loss`. ``requires_pretraining = False`` (the ``none``
    algorithm) tells the runner to go straight to transfer with the initial encoder.
    """

    requires_pretraining = True

    def __init__(
        self, encoder: nn.Module, optimizer: OptimizerFactory | None = None, gather_negatives: bool = True
    ) -> None:
        super().__init__()
        # The algorithm's own settings (every subclass's ``__init__`` arguments but the encoder, the optimizer
        # and modules such as a quantizer, whose settings a subclass adds): logged by every logger and
        # stored in every record as ``algorithm_settings``.
        self.save_hyperparameters(ignore=["encoder", "optimizer", "quantizer"])
        self.encoder = encoder
        self.optimizer_factory = optimizer
        self.gather_negatives = gather_negatives

    def all_keys(self, keys: Tensor) -> tuple[Tensor, int]:
        """Contrastive keys of every DDP rank (so N devices x batch B contrast like one batch of N x B,
        with ``gather_negatives``), and where this rank's own keys start among them."""
        if not (self.gather_negatives and torch.distributed.is_available() and torch.distributed.is_initialized()):
            return keys, 0
        gathered = self.all_gather(keys, sync_grads=True)  # [world, batch, dim]; gradients reach every rank's part
        return gathered.flatten(0, 1), self.global_rank * keys.shape[0]

    def contrast(self, queries: Tensor, keys: Tensor, temperature: float) -> Tensor:
        """:func:`info_nce` against the keys of all ranks; each query's positive is its own key."""
        all_keys, offset = self.all_keys(keys)
        targets = torch.arange(queries.shape[0], device=queries.device) + offset
        return info_nce(queries, all_keys, temperature, targets)

    def loss(self, inputs: Sequence[Tensor]) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, _labels = batch
        loss = self.loss(inputs)
        self.log("pretrain/loss", loss, prog_bar=True, batch_size=inputs[0].shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            raise ValueError(f"{type(self).__name__} needs an optimizer factory to be trained")
        return self.optimizer_factory(self.parameters())

    def settings(self) -> dict:
        """Algorithm settings recorded with every result: the saved hyperparameters."""
        return dict(self.hparams)
