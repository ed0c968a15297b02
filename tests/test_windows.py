"""The shared window slicer: the windows a loop of slices would cut, in the same memory order."""

from __future__ import annotations

import numpy as np
import pytest

from dabs_rq.data.windows import cut_windows, sliding_windows


@pytest.mark.parametrize(
    "length, window, stride", [(200, 40, 20), (57, 40, 40), (40, 40, 3), (39, 40, 1), (10, 1, 1), (133, 45, 13)]
)
@pytest.mark.parametrize("order", ["C", "F"])
def test_windows_are_the_slices_a_loop_would_cut(length, window, stride, order):
    signal = np.asarray(np.random.default_rng(length).normal(size=(length, 3)), dtype=np.float32, order=order)
    starts = range(0, length - window + 1, stride)
    view, cut = sliding_windows(signal, window, stride), cut_windows(signal, window, stride)
    assert view.shape == cut.shape == (len(starts), window, 3)
    if len(starts):
        loop = np.stack([signal[s : s + window] for s in starts])
        assert np.array_equal(view, loop) and np.array_equal(cut, loop)
        assert cut.strides == loop.strides  # same memory order: sums over the windows round alike
        assert not view.flags.writeable and np.shares_memory(view, signal)


def test_windows_of_labels_and_bad_sizes():
    labels = np.array(list("aabbbc"), dtype=object)
    assert [list(w) for w in sliding_windows(labels, 3, 2)] == [list("aab"), list("bbb")]
    with pytest.raises(ValueError, match="positive"):
        sliding_windows(labels, 0)
    with pytest.raises(ValueError, match="positive"):
        sliding_windows(labels, 2, stride=0)
