"""Hydra callback: rebuild the results table when a run or a whole sweep ends."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dabs_rq.distributed import is_launch_rank_zero
from dabs_rq.results.ablation import build_ablation
from dabs_rq.results.table import build_table, resolve_results_dir


class RebuildTable(Callback):
    """Rebuilds ``<results_dir>/table.{md,csv,png}`` once, after all jobs (never mid-sweep)."""

    def _rebuild(self, config: DictConfig) -> None:
        if not config.get("table", {}).get("rebuild_on_end", True):
            return
        if not is_launch_rank_zero():  # the other processes of a DDP job leave the table to rank 0
            return
        ablation = config.get("ablation")
        if ablation:  # an ablation sweep: metric vs its setting, not the main table
            paths = build_ablation(resolve_results_dir(config.get("results_dir")), ablation.name, ablation.setting)
            print(f"\nAblation summary: {paths['md']}\n  (also {paths['csv'].name} and {paths['png'].name} beside it)")
            return
        paths = build_table([resolve_results_dir(config.get("results_dir"))])
        print(f"\nResults table: {paths['md']}\n  (also {paths['csv'].name} and {paths['png'].name} beside it)")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._rebuild(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._rebuild(config)
