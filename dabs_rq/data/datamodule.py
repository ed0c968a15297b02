"""Lightning datamodule built from a dataset YAML: the reader makes the splits, config the loaders."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from dabs_rq.data import storage
from dabs_rq.data.tensor_dataset import make_loader


def _accepts(target: str, keyword: str) -> bool:
    """Whether the reader callable ``target`` takes ``keyword`` (or any keyword)."""
    try:
        parameters = inspect.signature(get_object(target)).parameters
    except (ImportError, ValueError, TypeError):
        return False
    return keyword in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class DomainDataModule(pl.LightningDataModule):
    """Train/test loaders of one dataset; ``drop_last`` for pretraining (fixed contrastive batch).

    Under DDP each rank gets its own share (``rank`` of ``world_size``; ``batch_size`` is per
    rank); shuffled orders are seeded by ``seed`` and the epoch, the same on every rank.
    """

    def __init__(
        self,
        dataset_cfg: DictConfig,
        cache_dir: Path,
        num_workers: int | None = None,
        batch_size: int | None = None,
        data_root: str | Path | None = None,
        download: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        on_corrupt: str = "error",
        splits: dict[str, Dataset] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = dataset_cfg
        self.cache_dir = Path(cache_dir)
        self.data_root = storage.data_root(data_root)
        self.download = bool(download)
        self.num_workers = int(dataset_cfg.get("num_workers", 0) if num_workers is None else num_workers)
        self.batch_size = int(batch_size or dataset_cfg.batch_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.on_corrupt = storage.check_on_corrupt(on_corrupt)
        # ``splits``: a dict shared by every datamodule of this dataset in one job, so each split is read
        # (and its skipped or left-out examples logged) once, however many stages look at it
        self._splits: dict[str, Dataset] = splits if splits is not None else {}

    def reader_kwargs(self) -> dict:
        """What the reader gets besides its YAML arguments: cache, data folder, ``reader_options``."""
        kwargs: dict = {"cache_dir": self.cache_dir}
        if "data" in self.cfg:
            kwargs["root"] = storage.require(self.cfg, self.data_root, self.download)
            kwargs["download"] = self.download
        kwargs.update(self.cfg.get("reader_options") or {})
        if _accepts(self.cfg.reader._target_, "on_corrupt"):  # readers of files; generated data has none
            kwargs["on_corrupt"] = self.on_corrupt
        return kwargs

    def split(self, name: str) -> Dataset:
        """The reader's ``name`` split, read once. Under a file lock in the cache folder, so that the
        processes of a DDP job (or concurrent jobs) never download or build the same cache at once: the
        first builds it, the others wait and then read it."""
        if name not in self._splits:
            from filelock import FileLock

            self.cache_dir.mkdir(parents=True, exist_ok=True)
            try:
                with FileLock(str(self.cache_dir / f".{self.cfg.name}.lock")):
                    self._splits[name] = instantiate(self.cfg.reader, split=name, **self.reader_kwargs())
            except InstantiationException as err:
                # Hydra wraps reader errors; a user-facing one must reach the CLI as its own one line.
                if isinstance(err.__cause__, (storage.DatasetMissingError, FileNotFoundError, ValueError)):
                    raise err.__cause__ from None
                raise
        return self._splits[name]

    def _loader(self, split: str, shuffle: bool, drop_last: bool) -> DataLoader:
        return make_loader(
            self.split(split),
            self.batch_size,
            shuffle,
            drop_last,
            self.num_workers,
            pin_memory=torch.cuda.is_available(),
            seed=self.seed,
            rank=self.rank,
            world_size=self.world_size,
        )

    def pretrain_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, drop_last=True)

    def train_dataloader(self, drop_last: bool = False) -> DataLoader:
        """The transfer training loader (DABS drops the last partial batch: ``transfer.drop_last``)."""
        return self._loader("train", shuffle=True, drop_last=drop_last)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, drop_last=False)
