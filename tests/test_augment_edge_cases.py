"""Edge cases of the RQ operator (``dabs_rq.ops.randomized_quantization``): degenerate channels,
non-finite values, half precision, empty and non-contiguous inputs, argument checking, extreme
magnitudes.

Complements ``tests/test_augment.py`` (which holds the reference-equality and basic property
tests); every test here fails if the edge-case contract of the module docstring is broken.
Tests that take a ``device`` also run on CUDA where it is available.
"""

import itertools

import pytest
import torch

from dabs_rq.ops.randomized_quantization import RandomizedQuantization, randomized_quantization

DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.gpu)] if torch.cuda.is_available() else [])
QUANTIZING = list(itertools.product(["inside_random", "middle"], ["random", "uniform"]))
HALF = [torch.float16, torch.bfloat16]


def channel_rows(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    d = channel_dim % x.dim()
    return x.movedim(d, 1).reshape(x.shape[0] * x.shape[d], -1)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, dtype and shape; NaN equals NaN."""
    if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a.isnan(), b.isnan()):
        return False
    return torch.equal(a[~a.isnan()], b[~b.isnan()])


def assert_inside_finite_range(x: torch.Tensor, q: torch.Tensor, channel_dim: int) -> None:
    """Every finite input value maps to a finite output inside its channel's finite [min, max]."""
    xr, qr = channel_rows(x.double(), channel_dim), channel_rows(q.double(), channel_dim)
    finite = torch.isfinite(xr)
    lo = torch.where(finite, xr, float("inf")).amin(1, keepdim=True)
    hi = torch.where(finite, xr, float("-inf")).amax(1, keepdim=True)
    assert bool(torch.isfinite(qr[finite]).all()), "NaN or inf from a finite input"
    inside = (qr >= lo) & (qr <= hi)
    assert bool(inside[finite].all()), "output outside the channel's [min, max]"


# --- constant channels and single elements ---------------------------------------------------


CONSTANTS = {
    torch.float32: [0.0, -7.25, 1e30, -1e30, 3.0e38, 1e-40, -1e-45],
    torch.float64: [0.0, 1e300, -1.7e308, 5e-324],
    torch.float16: [0.0, 65504.0, -65504.0, 6e-8, -3.5],
    torch.bfloat16: [0.0, 3.38e38, -3.38e38, 1e-40, 2.5],
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", list(CONSTANTS))
@pytest.mark.parametrize("collapse,spacing", QUANTIZING)
def test_constant_channels_are_returned_unchanged(device, dtype, collapse, spacing):
    values = torch.tensor(CONSTANTS[dtype], dtype=dtype)
    k = len(values)
    # channels 0..k-1 constant (one per value), channel k varying: the constant ones must not care
    x = values.view(1, k, 1).repeat(3, 1, 10)
    x = torch.cat([x, torch.randn(3, 1, 10).to(dtype)], dim=1).to(device)
    for num_bins in (2, 8, 64):
        q = randomized_quantization(x, num_bins=num_bins, collapse=collapse, spacing=spacing)
        assert q.dtype == dtype and torch.isfinite(q).all()
        assert torch.equal(q[:, :k], x[:, :k]), f"constant channel changed (num_bins={num_bins})"
        # the same channels laid out as token embeddings (channels last)
        qt = randomized_quantization(
            x.transpose(1, 2).contiguous(), num_bins=num_bins, channel_dim=-1, collapse=collapse, spacing=spacing
        )
        assert torch.equal(qt[..., :k], x.transpose(1, 2)[..., :k])


def test_constant_channels_under_all_zeros_become_zeros():
    # all_zeros replaces every finite value by 0 (the reference's meaning of the mode), constants too
    x = torch.full((2, 3, 4), 5.0)
    x[0, 1, 2] = float("nan")
    q = randomized_quantization(x, collapse="all_zeros")
    assert torch.isnan(q[0, 1, 2]) and bool((q[torch.isfinite(x)] == 0).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64] + HALF)
@pytest.mark.parametrize("collapse,spacing", QUANTIZING)
def test_a_single_element_per_channel_is_returned_unchanged(device, dtype, collapse, spacing):
    torch.manual_seed(0)
    cases = [((5, 4), 1), ((5, 4, 1, 1), 1), ((5, 1, 4), -1), ((5, 1, 1, 4), 3), ((1, 1), -1)]
    for shape, channel_dim in cases:
        x = (torch.randn(shape) * 100).to(dtype).to(device)
        for p in (1.0, 0.5):
            q = randomized_quantization(x, num_bins=3, channel_dim=channel_dim, collapse=collapse, spacing=spacing, p=p)
            assert same(q, x), f"shape {shape}, channel_dim {channel_dim}, p {p}"


# --- non-finite values -------------------------------------------------------------------------


def _with_non_finite(dtype: torch.dtype, device: str) -> torch.Tensor:
    """(3, 4, 24): scattered NaN / +-inf, a channel of NaN only, a channel of +-inf only, one clean."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 4, 24, generator=g) * 5
    x[0, 0, 3], x[0, 0, 9], x[0, 0, 17] = float("nan"), float("inf"), float("-inf")
    x[1, 2, 0], x[1, 2, 23] = float("inf"), float("inf")  # infinities at both ends of the channel
    x[2, 1, 5:9] = float("-inf")
    x[2, 3, 11] = float("nan")
    x[1, 0] = float("nan")  # all NaN
    x[1, 3, ::2], x[1, 3, 1::2] = float("inf"), float("-inf")  # all infinite
    return x.to(dtype).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64] + HALF)
@pytest.mark.parametrize("num_bins", [2, 5, 64])
def test_finite_values_are_quantized_as_if_the_non_finite_ones_were_absent(device, dtype, num_bins):
    x = _with_non_finite(dtype, device)
    for layout, channel_dim in [("channels", 1), ("tokens", -1)]:
        xin = x if layout == "channels" else x.transpose(1, 2).contiguous()
        q = randomized_quantization(
            xin, num_bins=num_bins, channel_dim=channel_dim, spacing="uniform", collapse="middle"
        )
        if layout == "tokens":
            q = q.transpose(1, 2)
        assert q.dtype == dtype
        for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
            row, qrow = x[b, c], q[b, c]
            finite = torch.isfinite(row)
            assert same(qrow[~finite], row[~finite]), f"non-finite values changed in ({b}, {c})"
            if finite.any():
                alone = randomized_quantization(
                    row[finite].view(1, 1, -1), num_bins=num_bins, spacing="uniform", collapse="middle"
                )
                assert torch.equal(qrow[finite], alone.view(-1)), f"finite values of ({b}, {c}) poisoned"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("collapse,spacing", QUANTIZING + [("all_zeros", "random")])
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_non_finite_values_leave_the_random_draws_and_bins_of_the_others_unchanged(device, collapse, spacing, p):
    # Replacing each non-finite value by its channel's finite minimum changes neither the channel
    # statistics nor the number of draws: the finite values must come out identical.
    x = _with_non_finite(torch.float32, device)
    finite = torch.isfinite(x)
    lo = torch.where(finite, x, float("inf")).amin(dim=2, keepdim=True)
    filled = torch.where(finite, x, torch.where(torch.isfinite(lo), lo, 0.0).expand_as(x))
    kwargs = dict(num_bins=6, collapse=collapse, spacing=spacing, p=p)
    torch.manual_seed(5)
    if device == "cuda":
        torch.cuda.manual_seed(5)
    q = randomized_quantization(x, **kwargs)
    torch.manual_seed(5)
    if device == "cuda":
        torch.cuda.manual_seed(5)
    expected = randomized_quantization(filled, **kwargs)
    assert torch.equal(q[finite], expected[finite])
    assert same(q[~finite], x[~finite])


# --- half precision ----------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("collapse,spacing", QUANTIZING)
def test_half_precision_near_its_limits_keeps_dtype_range_and_finiteness(device, dtype, collapse, spacing):
    info = torch.finfo(dtype)
    g = torch.Generator().manual_seed(2)
    rows = [
        torch.rand(32, generator=g) * 2 - 1,  # [-1, 1]: the full range of the dtype below
        torch.rand(32, generator=g) * 0.01 + 0.99,  # a narrow band just below the maximum
        (torch.rand(32, generator=g) - 0.5) * 1e-3,  # around 0, subnormals of float16 included
    ]
    x = torch.stack([rows[0] * info.max, rows[1] * info.max, -rows[1] * info.max, rows[2] * info.tiny * 1e3])
    x = x.unsqueeze(0).repeat(2, 1, 1).to(dtype).to(device)  # (2, 4, 32)
    assert torch.isfinite(x).all()
    for num_bins in (2, 8, 64):
        q = randomized_quantization(x, num_bins=num_bins, collapse=collapse, spacing=spacing)
        assert q.dtype == dtype and q.shape == x.shape
        assert_inside_finite_range(x, q, 1)


# --- empty and non-contiguous inputs -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32] + HALF)
def test_empty_inputs_come_back_empty_with_shape_and_dtype(dtype):
    for shape, channel_dim in [((0, 3, 4), 1), ((0, 5), -1), ((0, 2, 3, 3), 2), ((2, 0, 4), 1), ((2, 3, 0), 1)]:
        x = torch.empty(shape, dtype=dtype)
        settings = [("inside_random", "random", 1.0), ("middle", "uniform", 0.5), ("all_zeros", "random", 0.0)]
        for collapse, spacing, p in settings:
            for op in (
                lambda t: randomized_quantization(
                    t,
                    num_bins=4,
                    channel_dim=channel_dim,
                    collapse=collapse,
                    spacing=spacing,
                    p=p,
                    compile="reduce-overhead",
                ),
                RandomizedQuantization(num_bins=4, channel_dim=channel_dim, collapse=collapse, spacing=spacing, p=p),
            ):
                q = op(x)
                assert q.shape == x.shape and q.dtype == dtype
    with pytest.raises(ValueError, match="num_bins"):  # arguments are still checked on empty input
        randomized_quantization(torch.empty(0, 3, 4), num_bins=1)


def _views():
    base = torch.randn(4, 6, 10, 8)
    yield "transposed", base.transpose(2, 3), 1
    yield "strided", base[:, ::2, 1::3, ::2], 1
    yield "channels_last", base.contiguous(memory_format=torch.channels_last), 1
    yield "permuted tokens", base.permute(0, 3, 2, 1)[:, :, :, :5], -1
    yield "expanded", torch.randn(4, 6, 1).expand(4, 6, 7), 1
    yield "channel slice", base[:, 1:4], 2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("collapse,spacing", QUANTIZING)
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_non_contiguous_input_equals_its_contiguous_copy(device, collapse, spacing, p):
    for name, view, channel_dim in _views():
        view = view.to(device)
        if device == "cpu":
            assert not view.is_contiguous(), name
        out = []
        for x in (view, view.contiguous()):
            torch.manual_seed(9)
            if device == "cuda":
                torch.cuda.manual_seed(9)
            out.append(
                randomized_quantization(x, num_bins=5, channel_dim=channel_dim, collapse=collapse, spacing=spacing, p=p)
            )
        assert torch.equal(out[0], out[1]), name
        assert out[0].shape == view.shape


# --- argument checking -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,bad,valid",
    [
        ({"num_bins": 0}, "0", ">= 2"),
        ({"num_bins": 2.5}, "2.5", ">= 2"),
        ({"num_bins": True}, "True", ">= 2"),
        ({"num_bins": None}, "None", ">= 2"),
        ({"p": -0.1}, "-0.1", "[0, 1]"),
        ({"p": float("nan")}, "nan", "[0, 1]"),
        ({"p": "0.5"}, "'0.5'", "[0, 1]"),
        ({"p": None}, "None", "[0, 1]"),
        ({"collapse": "Middle"}, "'Middle'", "inside_random, middle, all_zeros"),
        ({"collapse": None}, "None", "inside_random, middle, all_zeros"),
        ({"spacing": "log"}, "'log'", "random, uniform"),
        ({"channel_dim": -3}, "-3", "1..2 or -1..-2"),
        ({"channel_dim": 1.5}, "1.5", "1..2 or -1..-2"),
        ({"channel_dim": True}, "True", "1..2 or -1..-2"),
    ],
)
def test_invalid_arguments_name_the_bad_value_and_the_valid_ones(kwargs, bad, valid):
    with pytest.raises(ValueError) as info:
        randomized_quantization(torch.randn(2, 3, 4), **kwargs)
    message = str(info.value)
    assert "\n" not in message and bad in message and valid in message, message
    name = next(iter(kwargs))
    assert message.startswith(name), message
    if name != "channel_dim":
        with pytest.raises(ValueError, match=name):
            RandomizedQuantization(**kwargs)


def test_module_rejects_a_bad_channel_dim_before_seeing_an_input():
    for channel_dim in (0, 1.5, None, "1"):
        with pytest.raises(ValueError, match="channel_dim"):
            RandomizedQuantization(channel_dim=channel_dim)


def test_rank_below_two_names_the_rank_and_shape():
    for x in (torch.tensor(1.0), torch.randn(5)):
        with pytest.raises(ValueError) as info:
            randomized_quantization(x)
        message = str(info.value)
        assert "\n" not in message and "rank >= 2" in message and f"rank {x.dim()}" in message, message
        assert str(tuple(x.shape)) in message, message


def test_integer_like_arguments_are_accepted():
    np = pytest.importorskip("numpy")
    x = torch.randn(2, 3, 4)
    torch.manual_seed(0)
    a = randomized_quantization(x, num_bins=np.int64(4), channel_dim=np.int64(-1), p=np.float32(1.0))
    torch.manual_seed(0)
    assert torch.equal(a, randomized_quantization(x, num_bins=4, channel_dim=-1))


# --- never a NaN from finite input, extreme magnitudes ----------------------------------------


def _extreme_input(dtype: torch.dtype) -> torch.Tensor:
    """(2, 8, 16) with ordinary channels next to channels at the edges of float32."""
    g = torch.Generator().manual_seed(4)
    r = torch.rand(8, 16, generator=g, dtype=torch.float64)
    big = torch.finfo(torch.float32).max
    channels = [
        r[0] * 4 - 2,  # ordinary
        r[1] * 2e30 - 1e30,  # +-1e30
        r[2] * 1e30 + 1e30,  # [1e30, 2e30]
        (r[3] - 0.5) * 2e-40,  # float32 subnormals around 0
        r[4] * 1e-44,  # the smallest subnormals
        (r[5] * 2 - 1) * 65504,  # float16 range
        (r[6] * 2 - 1) * big,  # a range that overflows float32 (max - min = inf)
        big * (1 - r[7] * 0.01),  # a narrow band at the float32 maximum (min + max = inf)
    ]
    x = torch.stack(channels).unsqueeze(0).repeat(2, 1, 1)
    x[1, :, 0] = x[1].amin(1)  # exact min and max present
    x[1, :, 1] = x[1].amax(1)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_from_finite_input_in_any_setting(dtype):
    x = _extreme_input(dtype)
    assert torch.isfinite(x).all()
    for collapse, spacing, num_bins, p in itertools.product(
        ["inside_random", "middle", "all_zeros"], ["random", "uniform"], [2, 3, 8, 64], [0.0, 0.5, 1.0]
    ):
        torch.manual_seed(num_bins)
        q = randomized_quantization(x, num_bins=num_bins, collapse=collapse, spacing=spacing, p=p)
        setting = (collapse, spacing, num_bins, p)
        assert q.dtype == dtype and torch.isfinite(q).all(), setting
        if collapse != "all_zeros":
            assert_inside_finite_range(x, q, 1)
            xr, qr = channel_rows(x, 1), channel_rows(q, 1)
            order = xr.argsort(dim=1)
            assert bool((qr.gather(1, order).diff(dim=1) >= 0).all()), f"order not preserved: {setting}"


def _zero_draws(monkeypatch):
    """Every torch.rand draw returns 0 (possible, with probability 2^-24 per float32 draw)."""
    real_rand = torch.rand

    def zeros(*size, generator=None, **kwargs):
        return torch.zeros_like(real_rand(*size, generator=generator, **kwargs))

    monkeypatch.setattr(torch, "rand", zeros)


@pytest.mark.parametrize("collapse", ["inside_random", "middle"])
def test_overflowing_ranges_give_no_nan_even_when_a_draw_is_exactly_zero(monkeypatch, collapse):
    # max - min = inf in float32: a cut fraction of 0 used to give 0 * inf = NaN cut points and
    # NaN proxies, and a proxy fraction of 0 did the same inside an infinitely wide bin.
    x = torch.tensor([-3e38, 3e38, 0.0, 1e38, -2e38, 2.5e38]).repeat(2, 3, 1)
    _zero_draws(monkeypatch)
    q = randomized_quantization(x, num_bins=4, collapse=collapse)
    assert torch.isfinite(q).all(), q
    # all cuts at min: every value is in the last bin [min, max + 1e-6)
    expected = 0.0 if collapse == "middle" else -3e38
    assert bool((q == expected).all()), q


@pytest.mark.parametrize("num_bins", [2, 5, 8])
def test_huge_magnitudes_are_quantized_like_in_float64_not_collapsed_to_one_value(num_bins):
    # Channels whose max - min or min + max overflows float32 used to end up as a single value
    # (all cut points at inf, or every middle proxy clamped to max). They now get real bins.
    g = torch.Generator().manual_seed(1)
    big = torch.finfo(torch.float32).max
    x = torch.stack(
        [
            (torch.rand(40, generator=g, dtype=torch.float64) * 2 - 1) * big * 0.99,
            big * (1 - torch.rand(40, generator=g, dtype=torch.float64) * 0.05),
            -big * (1 - torch.rand(40, generator=g, dtype=torch.float64) * 0.05),
        ]
    ).unsqueeze(0)
    q32 = randomized_quantization(x.float(), num_bins=num_bins, spacing="uniform", collapse="middle")
    q64 = randomized_quantization(x, num_bins=num_bins, spacing="uniform", collapse="middle")
    torch.testing.assert_close(q32.double(), q64, rtol=1e-6, atol=0.0)
    for row in q32[0]:
        assert len(torch.unique(row)) == num_bins


@pytest.mark.parametrize("p", [1.0, 0.5])
@pytest.mark.parametrize("collapse", ["inside_random", "middle", "all_zeros"])
def test_careful_path_equals_the_default_path_on_extreme_magnitudes(p, collapse, monkeypatch):
    # The path torch.compile traces has no data-dependent branch: it always takes the careful
    # statistics and lookup. It must pick the same arithmetic per channel as the default path.
    x = _extreme_input(torch.float32)
    x[0, 0, 2], x[1, 6, 3] = float("nan"), float("-inf")
    torch.manual_seed(3)
    expected = randomized_quantization(x, num_bins=6, collapse=collapse, p=p)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.manual_seed(3)
    got = randomized_quantization(x, num_bins=6, collapse=collapse, p=p)
    assert same(expected, got)
