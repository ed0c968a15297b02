"""Third-party messages a benchmark user should not see, silenced at their source by targeted filters.

:func:`silence_known_noise` is called where a job starts (the command line), never at import, so a
library user of :mod:`dabs_rq` keeps every warning and log line. Each filter names one message.
"""

from __future__ import annotations

import logging
import warnings

#: Lightning's per-trainer banners: a job makes several trainers (pretraining, one per transfer
#: dataset, feature extraction) and each would repeat them.
LIGHTNING_BANNERS = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "IPU available:",
    "💡 Tip:",
    "LOCAL_RANK:",
    "`Trainer.fit` stopped:",
    "You are using a CUDA device",
)


class _DropBanners(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_BANNERS)


def silence_known_noise() -> None:
    """Install the filters (idempotent)."""
    # In-memory datasets need no loader workers; the hint is noise for them.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Epoch metrics are torchmetrics objects, already gathered across ranks when computed.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    # Cached-feature probes have a handful of large batches per epoch; the logging-interval hint is noise.
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    # Lightning's own pytree helper builds a torch LeafSpec, which torch >= 2.10 deprecates (once per job).
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        module=r"pytorch_lightning\.utilities\._pytree",
    )
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropBanners) for f in logger.filters):
            logger.addFilter(_DropBanners())
