"""The pretraining progress bar: steps done of ``pretrain.max_steps``.

Pretraining is bounded by steps, not epochs (``max_epochs=-1``), so Lightning's per-epoch bar would
read "Epoch 0/-2" and restart at every pass over the data. This bar counts optimizer steps over the
whole run (a resumed run starts at its checkpoint's step).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole pretraining: ``Pretraining step n/max_steps`` with the logged loss."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:  # the first epoch of this run (or of a resumed one)
            bar.reset(total=trainer.max_steps)
            bar.initial = trainer.global_step
            bar.set_description("Pretraining step")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self._should_update(step, trainer.max_steps):
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.train_progress_bar.disable:  # the bar stays open across epochs (Lightning closes it at the end)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
