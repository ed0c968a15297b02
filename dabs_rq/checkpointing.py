"""Resumable pretraining: periodic and preemption checkpoints, and the job's own state file.

A job's folder (Hydra's output dir, the same path each time a sweep is re-submitted) holds:

* ``checkpoints/last.ckpt``: written every ``pretrain.checkpoint_every_n_steps`` steps, every
  ``pretrain.checkpoint_every_minutes`` minutes of training and when SLURM (or a user) signals
  preemption; a re-run resumes from it exactly: besides the weights, optimizer and step it holds
  the position in the epoch's data order (the training loader's state, see
  :class:`dabs_rq.data.tensor_dataset.ResumableLoader`) and every random stream training draws
  from (torch CPU and CUDA, numpy, ``random``), so a resumed CPU run ends with the same encoder,
  bit for bit, as one never interrupted;
* ``encoder.pt``: the pretrained encoder, written once pretraining has finished;
* ``run_state.json``: the config fingerprint (the resolved pretraining dataset YAML included),
  whether pretraining finished and which transfer datasets have their record under which dataset
  fingerprint, so a re-run skips finished work, redoes a transfer whose dataset YAML changed, and
  refuses to mix configs.

Every file is written to a temporary name and renamed, so a kill at any instant (SIGKILL
included) leaves the previous complete file, never a truncated one.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from dabs_rq.errors import UserError
from dabs_rq.hashing import digest
from dabs_rq.io import atomic_file, write_json_atomic

#: Signals meaning "you are about to be stopped": SLURM's pre-timeout signal (USR1, or USR2 as
#: submitit asks for), and the SIGTERM of preemption / scancel.
PREEMPTION_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")

#: Config keys that say where or how fast a job runs, not what it computes: left out of the
#: fingerprint so that moving data, caches or results, or changing workers, resumes the same run.
VOLATILE_KEYS = (
    "output_dir",
    "results_dir",
    "cache_dir",
    "data_root",
    "download",
    "extra_domain_dirs",
    "overwrite",
    "logger",
    "table",
    "record",
    "pretrain.num_workers",
    "pretrain.checkpoint_every_n_steps",
    "pretrain.checkpoint_every_minutes",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.enable_model_summary",
    "hydra",
)


class Preempted(Exception):
    """Pretraining stopped on a preemption signal after saving its checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        super().__init__(
            f"pretraining stopped by {name} at step {step}; checkpoint saved to {checkpoint}. "
            f"Re-run the same command to resume from it"
        )


def _drop(config: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = config
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def identity_config(config: dict) -> dict:
    """The part of a resolved config that decides a job's numbers."""
    config = json.loads(json.dumps(config, default=str))
    for key in VOLATILE_KEYS:
        _drop(config, key)
    return config


def fingerprint(config: dict) -> str:
    """A short stable hash of :func:`identity_config`."""
    return digest(identity_config(config), length=16)


def config_differences(old: dict, new: dict, limit: int = 4) -> list[str]:
    """Dotted keys whose values differ between two configs' identities (``key: old -> new``).

    Keys present in only one of them are not differences: a setting added to the project later
    (with a default that keeps the old behaviour) must not make yesterday's run "another config".
    """
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) & set(b)):
                walk(a[key], b[key], f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix[:-1]}: {a!r} -> {b!r}")

    walk(identity_config(old), identity_config(new), "")
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file then renamed; loaded with ``weights_only``."""

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any | None = None) -> None:
        with atomic_file(Path(path), "wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(
        self, path: Any, map_location: Callable | None = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict:
        return torch.load(path, map_location=map_location, weights_only=True)


def rng_states() -> dict:
    """Every random stream training may draw from, in a form ``torch.load(weights_only=True)`` reads."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return states


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` returned (older checkpoints: ``torch_rng``/``cuda_rng`` only)."""
    if "torch" in states or "torch_rng" in states:
        torch.set_rng_state(states.get("torch", states.get("torch_rng")).cpu())
    cuda = states.get("cuda", states.get("cuda_rng"))
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda.cpu())
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        state = states["numpy"]
        np.random.set_state(
            ("MT19937", state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["gauss"])
        )


def _loaders(trainer: pl.Trainer) -> Iterator[Any]:
    """The training loaders (a loader, or lists/dicts of them)."""
    stack = [trainer.train_dataloader]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif item is not None:
            yield item


class ResumableCheckpoint(pl.Callback):
    """Saves ``<dirpath>/last.ckpt`` every ``every_n_steps`` steps, every ``every_minutes`` minutes
    of training and on a preemption signal.

    On SIGUSR1/SIGUSR2/SIGTERM the handler only notes the signal; at the end of the current
    step every rank agrees to stop, the checkpoint is saved and training ends, and
    :attr:`preempted` holds the signal. The handler that was installed before (submitit's
    requeue, for instance) is given the signal afterwards by :meth:`forward_signal`.

    Exact resumption: after every step the training loaders are told how many batches of the
    epoch are used (``mark_consumed``), which Lightning saves as the loaders' state; this
    callback's own state holds the random streams as they are after the step, and a resumed run
    sets them back just before its first step (iterators made and batches fetched in between draw
    from no global stream, see :func:`dabs_rq.data.tensor_dataset.make_loader`). The ranks of a
    DDP run are seeded alike and draw alike, so rank 0's streams are every rank's.
    """

    FILENAME = "last.ckpt"

    def __init__(
        self,
        dirpath: Path,
        every_n_steps: int | None,
        every_minutes: float | None = None,
        signals: tuple[str, ...] = PREEMPTION_SIGNALS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps <= 0
        ):
            raise UserError(
                f"pretrain.checkpoint_every_n_steps must be a positive integer or null, got {every_n_steps}"
            )
        if every_minutes is not None and (
            isinstance(every_minutes, bool) or not isinstance(every_minutes, (int, float)) or not every_minutes > 0
        ):
            raise UserError(f"pretrain.checkpoint_every_minutes must be a positive number or null, got {every_minutes}")
        self.dirpath, self.every_n_steps = Path(dirpath), every_n_steps
        self.every_seconds = None if every_minutes is None else float(every_minutes) * 60.0
        self.signals = tuple(getattr(signal, name) for name in signals if hasattr(signal, name))
        self.clock = clock
        self.preempted: int | None = None
        self._received: int | None = None
        self._previous: dict[int, Any] = {}
        self._last_save = clock()
        self._rng_to_restore: dict | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.FILENAME

    def _note(self, signum: int, frame: Any) -> None:
        self._received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning has installed its own handlers (it does so after on_fit_start).
        self._previous = {}
        self._last_save = self.clock()
        try:
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._note)
        except ValueError:  # not the main thread: no signal handling possible, periodic saves only
            self._previous.clear()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _time_due(self) -> bool:
        return self.every_seconds is not None and self.clock() - self._last_save >= self.every_seconds

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: resumable
        self._last_save = self.clock()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._rng_to_restore is not None:  # the first step of a resumed run
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for loader in _loaders(trainer):
            if hasattr(loader, "mark_consumed"):
                loader.mark_consumed(batch_idx + 1)
        # One collective per step as before: "stop or save now" (any rank), then, only when it
        # holds, which of the two; every rank takes the same branch, so none waits for another.
        act = self._received is not None or self._time_due()
        if trainer.world_size > 1:
            act = trainer.strategy.reduce_boolean_decision(act, all=False)
        stop = False
        if act:
            stop = self._received is not None
            if trainer.world_size > 1:
                stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self._save(trainer)
            self.preempted = self._received or signal.SIGTERM
            trainer.should_stop = True
        elif act or (self.every_n_steps and trainer.global_step % self.every_n_steps == 0):
            self._save(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def forward_signal(self) -> None:
        """Hand the preemption signal to the handler that was there before (e.g. submitit's requeue)."""
        if self.preempted is None:
            return
        previous = self._previous.get(self.preempted)
        # SIGTERM's previous handler is Lightning's own (it would only flag the finished trainer).
        if callable(previous) and self.preempted != signal.SIGTERM:
            previous(self.preempted, None)

    def state_dict(self) -> dict:
        # Saved at the end of a step: the streams the next step draws from.
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        # Set back just before the first step (Lightning restores callbacks before it makes the
        # data iterators and moves the model; nothing there may shift them).
        self._rng_to_restore = state_dict.get("rng", state_dict) or None


class RunState:
    """``run_state.json`` of one job folder: what is finished, under which config."""

    FILENAME = "run_state.json"

    def __init__(self, folder: Path, config: dict) -> None:
        self.path = Path(folder) / self.FILENAME
        self.config = config
        self.data: dict = {
            "fingerprint": fingerprint(config),
            "pretrain_done": False,
            "pretrain_steps": 0,
            "pretrain_seconds": 0.0,
            "pretrain_excluded": {},
            "transfer_done": {},
        }

    def load(self) -> RunState:
        """Read the folder's state; a folder of a job with another config is refused, not reused."""
        if not self.path.exists():
            return self
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{self.path} is unreadable ({err}); delete it to restart this job from scratch") from None
        diff = "; ".join(config_differences(stored.get("config") or {}, self.config))
        if diff or not isinstance(stored.get("config"), dict):
            raise UserError(
                f"{self.path.parent} holds a job with another config ({diff}); "
                f"use another experiment_name or hydra.run.dir, or delete that folder"
            )
        self.data.update({k: v for k, v in stored.items() if k in self.data})
        if isinstance(self.data["transfer_done"], list):  # an older state file: no dataset fingerprints
            self.data["transfer_done"] = dict.fromkeys(self.data["transfer_done"])
        return self

    def save(self) -> None:
        write_json_atomic(self.path, {**self.data, "config": identity_config(self.config)})

    @property
    def pretrain_done(self) -> bool:
        return bool(self.data["pretrain_done"])

    def transfer_done(self, dataset: str, dataset_fingerprint: str) -> bool:
        """Whether ``dataset``'s transfer finished with these dataset settings (a changed YAML: not done)."""
        return self.data["transfer_done"].get(dataset, "") == dataset_fingerprint

    def mark_pretrained(self, steps: int, seconds: float, excluded: dict | None = None) -> None:
        """Pretraining finished: its steps, time and the examples its data left out (by reason)."""
        self.data.update(
            pretrain_done=True,
            pretrain_steps=int(steps),
            pretrain_seconds=round(seconds, 3),
            pretrain_excluded=dict(excluded or {}),
        )
        self.save()

    def mark_transferred(self, dataset: str, dataset_fingerprint: str) -> None:
        self.data["transfer_done"][dataset] = dataset_fingerprint
        self.save()
