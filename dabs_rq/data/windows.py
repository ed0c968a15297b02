"""The one window slicer of the sensor readers: a [T, C] recording -> its [N, window, C] windows.

The generic sensor reader (:mod:`dabs_rq.data.generic.sensor`), PAMAP2
(:mod:`dabs_rq.data.readers.pamap2`) and the embedded smartwatch recordings
(:mod:`dabs_rq.data.embedded.watch_imu`) all cut windows of consecutive time steps; they share
:func:`sliding_windows`, a view made by numpy's ``sliding_window_view`` (nothing is copied until
the caller indexes it), so a window is always ``signal[s : s + window]``; :func:`cut_windows` is
the same windows as an array of their own.

Which recordings are too short, and what happens to them (counted, refused or skipped), stays
with each reader: here a recording shorter than ``window`` simply has no window.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def sliding_windows(signal: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """The windows of ``signal`` ([T, ...], time first) starting at ``0, stride, 2 * stride, ...``.

    A read-only view ``[N, window, ...]`` with ``N = (T - window) // stride + 1`` (every window
    that fits), whose item ``i`` is ``signal[i * stride : i * stride + window]``; an empty
    ``[0, window, ...]`` array when ``T < window``. Index it (or ``np.ascontiguousarray`` it)
    for an array of its own.
    """
    window, stride = int(window), int(stride)
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive integers; got {window} and {stride}")
    signal = np.asarray(signal)
    if len(signal) < window:
        return np.empty((0, window, *signal.shape[1:]), dtype=signal.dtype)
    # sliding_window_view puts the window axis last: [T - window + 1, ..., window] -> [N, window, ...]
    return np.moveaxis(sliding_window_view(signal, window, axis=0)[::stride], -1, 1)


def cut_windows(signal: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """:func:`sliding_windows` copied into an array ``[N, window, ...]`` of their own.

    Stacked window by window (``np.stack``), so each window keeps the memory order of ``signal``
    (a table read column by column stays column-major inside each window): the float sums a reader
    later takes over the windows (normalisation statistics) add in the same order as before.
    """
    windows = sliding_windows(signal, window, stride)
    return np.stack(list(windows)) if len(windows) else windows.copy()
