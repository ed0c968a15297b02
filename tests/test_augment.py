"""Properties of the RQ operator and equality with the reference (``tests/reference``)."""

import pytest
import torch

import dabs_rq.augment
from dabs_rq.ops.randomized_quantization import RandomizedQuantization, _bins, randomized_quantization
from tests.reference import UPSTREAM, reference_quantize, restated

SHAPES = [((4, 3), 1), ((4, 5, 7), -1), ((2, 3, 8, 8), 1), ((2, 6, 3, 4, 5), 2), ((3, 9, 16), 1)]


def channel_rows(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    d = channel_dim % x.dim()
    return x.movedim(d, 1).reshape(x.shape[0] * x.shape[d], -1)


@pytest.mark.parametrize("shape,channel_dim", SHAPES)
@pytest.mark.parametrize("collapse", ["inside_random", "middle"])
@pytest.mark.parametrize("spacing", ["random", "uniform"])
def test_values_inside_range_few_levels_and_order_preserved(shape, channel_dim, collapse, spacing):
    torch.manual_seed(0)
    x = torch.randn(shape) * 3 + 1
    num_bins = 4
    q = randomized_quantization(x, num_bins=num_bins, channel_dim=channel_dim, collapse=collapse, spacing=spacing)
    assert q.shape == x.shape and q.dtype == x.dtype
    xr, qr = channel_rows(x, channel_dim), channel_rows(q, channel_dim)
    lo, hi = xr.min(1, keepdim=True).values, xr.max(1, keepdim=True).values
    assert bool(((qr >= lo) & (qr <= hi)).all())
    for row_x, row_q in zip(xr, qr):
        assert len(torch.unique(row_q)) <= num_bins
        order = torch.argsort(row_x)
        assert bool((row_q[order].diff() >= 0).all()), "quantization must preserve order within a channel"
    # it really quantizes: fewer distinct values than the input has
    assert len(torch.unique(qr[0])) < len(torch.unique(xr[0])) or xr.shape[1] <= num_bins


def test_p_zero_is_identity_and_p_mixes_per_sample():
    x = torch.randn(64, 4, 10)
    assert torch.equal(randomized_quantization(x, p=0.0), x)
    g = torch.Generator().manual_seed(3)
    q = randomized_quantization(x, p=0.5, generator=g)
    unchanged = [(q[i] == x[i]).all().item() for i in range(64)]
    assert 10 < sum(unchanged) < 54  # about half the samples untouched


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_kept_and_no_nan(dtype):
    x = (torch.randn(4, 3, 6, 6) * 10).to(dtype)
    q = randomized_quantization(x, num_bins=5)
    assert q.dtype == dtype and q.shape == x.shape
    assert torch.isfinite(q).all()
    xr, qr = channel_rows(x.float(), 1), channel_rows(q.float(), 1)
    assert bool((qr >= xr.min(1, keepdim=True).values).all() and (qr <= xr.max(1, keepdim=True).values).all())


def test_generator_reproducible_and_module_matches_functional():
    x = torch.randn(8, 4, 5)
    a = RandomizedQuantization(num_bins=6, channel_dim=-1, generator=torch.Generator().manual_seed(1))(x)
    b = randomized_quantization(x, num_bins=6, channel_dim=-1, generator=torch.Generator().manual_seed(1))
    c = randomized_quantization(x, num_bins=6, channel_dim=-1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("num_bins", [2, 5, 8, 16])
def test_deterministic_mode_equals_reference(num_bins):
    torch.manual_seed(num_bins)
    x = torch.randn(4, 3, 12, 12)
    ours = randomized_quantization(x, num_bins=num_bins, spacing="uniform", collapse="middle")
    assert torch.equal(ours, reference_quantize(x, num_bins, "uniform", "middle"))


def test_random_mode_draws_match_reference_under_the_same_seed():
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(7)
    ref = reference_quantize(x, 8, "random", "inside_random")
    torch.manual_seed(7)
    ours = randomized_quantization(x, num_bins=8)
    torch.testing.assert_close(ours, ref)
    # bit for bit once the reference's proxies are clamped to the channel's [min, max], as ours are
    lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    assert torch.equal(ours, torch.minimum(torch.maximum(ref, lo), hi))


@pytest.mark.parametrize("collapse", ["inside_random", "middle", "all_zeros"])
@pytest.mark.parametrize("spacing", ["random", "uniform"])
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_every_setting_equals_the_reference_bit_for_bit_under_the_same_seed(collapse, spacing, p):
    # scaled so that no proxy of the last bin passes max (the reference's max + 1e-6 is then < 1 ulp)
    x = torch.randn(6, 3, 7, 5) * 50
    torch.manual_seed(11)
    ref = reference_quantize(x, 6, spacing, collapse, p)
    torch.manual_seed(11)
    assert torch.equal(randomized_quantization(x, num_bins=6, collapse=collapse, spacing=spacing, p=p), ref)


@pytest.mark.skipif(UPSTREAM is None, reason="the upstream file is not vendored in tests/reference")
@pytest.mark.parametrize("collapse", ["inside_random", "middle", "all_zeros"])
@pytest.mark.parametrize("spacing", ["random", "uniform"])
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_the_restated_oracle_equals_the_upstream_module(collapse, spacing, p):
    for seed, num_bins in [(0, 2), (1, 8), (2, 16)]:
        x = torch.randn(4, 3, 9, 7, generator=torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        upstream = reference_quantize(x, num_bins, spacing, collapse, p)
        torch.manual_seed(seed)
        assert torch.equal(restated.reference_quantize(x, num_bins, spacing, collapse, p), upstream)


def test_augment_re_exports_the_operator():
    assert dabs_rq.augment.RandomizedQuantization is RandomizedQuantization
    assert dabs_rq.augment.randomized_quantization is randomized_quantization


def test_all_zeros_collapse_matches_reference():
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(randomized_quantization(x, collapse="all_zeros"), torch.zeros_like(x))


def test_constant_channels_and_single_elements_stay_finite_and_unchanged():
    x = torch.ones(3, 4, 5) * 2.5
    assert torch.equal(randomized_quantization(x, channel_dim=1), x)
    single = torch.randn(3, 4, 1)
    assert torch.equal(randomized_quantization(single, channel_dim=1), single)


def test_non_finite_values_pass_through_and_do_not_poison_statistics():
    x = torch.randn(2, 3, 50)
    x[0, 1, 5], x[1, 2, 7], x[1, 0, 0] = float("nan"), float("inf"), float("-inf")
    q = randomized_quantization(x, num_bins=4)
    assert torch.isnan(q[0, 1, 5]) and q[1, 2, 7] == float("inf") and q[1, 0, 0] == float("-inf")
    finite = torch.isfinite(x)
    assert torch.isfinite(q[finite]).all()
    row = x[0, 1][torch.isfinite(x[0, 1])]
    qrow = q[0, 1][torch.isfinite(x[0, 1])]
    assert qrow.min() >= row.min() and qrow.max() <= row.max()


def test_empty_batch_and_non_contiguous_input():
    empty = torch.randn(0, 3, 4)
    assert randomized_quantization(empty).shape == (0, 3, 4)
    base = torch.randn(6, 8, 4)
    view = base.transpose(1, 2)  # non-contiguous (6, 4, 8)
    q = randomized_quantization(view, spacing="uniform", collapse="middle", channel_dim=1)
    assert torch.equal(q, randomized_quantization(view.contiguous(), spacing="uniform", collapse="middle"))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_bins": 1}, "num_bins"),
        ({"p": 1.5}, "p must"),
        ({"collapse": "mean"}, "collapse"),
        ({"spacing": "log"}, "spacing"),
        ({"channel_dim": 0}, "channel_dim"),
        ({"channel_dim": 5}, "channel_dim"),
    ],
)
def test_invalid_arguments_are_rejected_with_a_clear_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        randomized_quantization(torch.randn(2, 3, 4), **kwargs)
    if "channel_dim" not in kwargs:
        with pytest.raises(ValueError, match=match):
            RandomizedQuantization(**kwargs)


def test_rank_one_and_integer_inputs_are_rejected():
    with pytest.raises(ValueError, match="rank"):
        randomized_quantization(torch.randn(5))
    with pytest.raises(TypeError, match="floating"):
        randomized_quantization(torch.ones(2, 3, dtype=torch.long))


def _largest_allocation(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0), default=0)


def test_memory_is_linear_in_the_input_not_in_the_number_of_bins():
    x = torch.randn(8, 16, 32, 32)
    input_bytes = x.numel() * x.element_size()
    # 64 bins: a per-bin membership mask would need >= 16x the input in one allocation
    ours = _largest_allocation(lambda: randomized_quantization(x, num_bins=64))
    assert ours <= 2 * input_bytes, f"largest allocation {ours} B for a {input_bytes} B input"
    naive = _largest_allocation(lambda: reference_quantize(x, 64, "random", "inside_random"))
    assert naive >= 16 * input_bytes  # the check can tell the two apart


# --- fast paths (issue 5): both bin lookups and every layout agree with the reference semantics ---


def _tokens_reference(x: torch.Tensor, num_bins: int, spacing: str, collapse: str) -> torch.Tensor:
    """The reference on token embeddings [B, T, D] (channels last), through its (B, D, T, 1) layout."""
    out = reference_quantize(x.transpose(1, 2).unsqueeze(-1).contiguous(), num_bins, spacing, collapse)
    return out.squeeze(-1).transpose(1, 2)


@pytest.mark.parametrize("num_bins", [2, 8, 16])
def test_token_embeddings_channels_last_equal_reference(num_bins):
    torch.manual_seed(num_bins)
    x = torch.randn(3, 17, 24)
    ours = randomized_quantization(x, num_bins=num_bins, channel_dim=-1, spacing="uniform", collapse="middle")
    assert torch.equal(ours, _tokens_reference(x, num_bins, "uniform", "middle"))
    torch.manual_seed(5)
    ref = _tokens_reference(x, num_bins, "random", "inside_random")
    torch.manual_seed(5)
    torch.testing.assert_close(randomized_quantization(x, num_bins=num_bins, channel_dim=-1), ref)


def test_values_on_cut_points_go_to_the_upper_bin_as_in_the_reference():
    # integer values 0..8 with 8 uniform bins: every interior value sits exactly on a cut point
    x = torch.arange(9.0).repeat(2, 3, 1).view(2, 3, 9, 1) + torch.tensor([0.0, 8.0, -16.0]).view(1, 3, 1, 1)
    ours = randomized_quantization(x, num_bins=8, spacing="uniform", collapse="middle")
    assert torch.equal(ours, reference_quantize(x, 8, "uniform", "middle"))


@pytest.mark.parametrize("layout", ["images", "tokens", "middle_channels"])
def test_all_lookups_agree_exactly(layout, monkeypatch):
    torch.manual_seed(0)
    shape = {"images": (3, 4, 1, 50), "tokens": (3, 20, 5, 1), "middle_channels": (2, 6, 3, 7)}[layout]
    b, p_, c, q = shape  # [B, P, C, Q]: channel_dim=2 makes the operator see it as it is
    rows = torch.randn(b * c, p_ * q).round(decimals=1)  # (sample, channel) rows; many ties
    lo, hi = rows.amin(1), rows.amax(1)
    torch.manual_seed(1)  # the operator's draws under this seed: cut fractions, then proxy fractions
    cuts, proxies = _bins(lo, hi, 6, torch.rand(b * c, 5), torch.rand(b * c, 6), guard=False)
    # one value per row exactly on a cut point, replacing neither extreme: same statistics, same draws
    middle = rows.argsort(dim=1)[:, rows.shape[1] // 2]
    rows[torch.arange(b * c), middle] = cuts[:, 2]
    assert torch.equal(rows.amin(1), lo) and torch.equal(rows.amax(1), hi)
    xv = rows.view(b, c, p_, q).transpose(1, 2).contiguous()
    expected = proxies.gather(1, torch.searchsorted(cuts, rows, right=True)).view(b, c, p_, q).transpose(1, 2)
    torch.manual_seed(1)
    assert torch.equal(randomized_quantization(xv, num_bins=6, channel_dim=2), expected)  # lerp lookup
    # the careful path (the one torch.compile traces): torch.where lookup
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.manual_seed(1)
    assert torch.equal(randomized_quantization(xv, num_bins=6, channel_dim=2), expected)


def test_bins_are_sorted_and_follow_the_reference_arithmetic():
    lo, hi = torch.randn(40), torch.randn(40).abs() + 1
    hi = lo + hi
    for collapse in ["inside_random", "middle"]:
        for spacing in ["random", "uniform"]:
            fractions = torch.rand(40, 6) if spacing == "random" else None
            u = torch.rand(40, 7) if collapse == "inside_random" else None
            cuts, proxies = _bins(lo, hi, 7, fractions, u, guard=False)
            assert all(torch.equal(a, b) for a, b in zip((cuts, proxies), _bins(lo, hi, 7, fractions, u, guard=True)))
            assert cuts.shape == (40, 6) and proxies.shape == (40, 7)
            assert bool((cuts.diff(dim=1) >= 0).all()) and bool((proxies.diff(dim=1) >= 0).all())
            if fractions is not None:
                assert torch.equal(cuts, fractions.sort(dim=1).values * (hi - lo).unsqueeze(1) + lo.unsqueeze(1))


def test_huge_ranges_do_not_overflow_into_nan():
    x = torch.tensor([[[-3.0e38, 3.0e38, 0.0, 1.0e38, -2.0e38]]]).repeat(2, 3, 1)
    q = randomized_quantization(x, num_bins=4, channel_dim=1)
    assert torch.isfinite(q).all()
    assert bool((q >= -3.0e38).all() and (q <= 3.0e38).all())


def test_non_contiguous_token_input_and_gradient_input():
    base = torch.randn(4, 16, 10)
    view = base.transpose(1, 2)  # (4, 10, 16), channels last, not contiguous
    q = randomized_quantization(view, channel_dim=-1, spacing="uniform", collapse="middle")
    assert torch.equal(
        q, randomized_quantization(view.contiguous(), channel_dim=-1, spacing="uniform", collapse="middle")
    )
    x = torch.randn(2, 5, 8, requires_grad=True)
    assert randomized_quantization(x, channel_dim=-1).shape == x.shape
    assert randomized_quantization(x, channel_dim=-1, p=0.5).shape == x.shape  # the p draw keeps autograd working


def test_memory_is_linear_for_token_embeddings_too():
    x = torch.randn(8, 197, 256)
    input_bytes = x.numel() * x.element_size()
    # a per-bin mask would be 16x the input; the [B * D, num_bins] tables are small next to 197 tokens
    ours = _largest_allocation(lambda: randomized_quantization(x, num_bins=16, channel_dim=-1))
    assert ours <= 2 * input_bytes, f"largest allocation {ours} B for a {input_bytes} B input"


@pytest.mark.slow
@pytest.mark.skipif(
    not __import__("os").environ.get("DABS_RQ_TEST_COMPILE"),
    reason="torch.compile takes 20 s to minutes on a small CPU; set DABS_RQ_TEST_COMPILE=1",
)
def test_compiled_path_equals_eager():
    x = torch.randn(3, 9, 16)
    x[0, 2, 3] = float("nan")
    for mode in [True, "reduce-overhead"]:
        for kwargs in [dict(), dict(spacing="uniform", collapse="middle"), dict(p=0.5)]:
            torch.manual_seed(0)
            eager = randomized_quantization(x, channel_dim=-1, return_applied=True, **kwargs)
            torch.manual_seed(0)
            compiled = randomized_quantization(x, channel_dim=-1, compile=mode, return_applied=True, **kwargs)
            assert torch.equal(eager[0].nan_to_num(7.0), compiled[0].nan_to_num(7.0))
            assert torch.equal(eager[1], compiled[1])
    torch.manual_seed(0)
    a = randomized_quantization(x, compile="reduce-overhead")
    torch.manual_seed(0)
    assert torch.equal(a.nan_to_num(7.0), RandomizedQuantization(compile="reduce-overhead")(x).nan_to_num(7.0))


@pytest.mark.parametrize("p", [1.0, 0.5])
@pytest.mark.parametrize("collapse", ["inside_random", "middle", "all_zeros"])
def test_careful_path_for_torch_compile_equals_the_default_path(p, collapse, monkeypatch):
    x = torch.randn(6, 7, 5)
    x[0, 2, 3], x[1, 0, 0], x[2, :, 1] = float("nan"), float("inf"), float("-inf")
    for dim in (1, 2):
        torch.manual_seed(4)
        expected = randomized_quantization(x, num_bins=5, channel_dim=dim, collapse=collapse, p=p)
        with monkeypatch.context() as patch:
            patch.setattr(torch.compiler, "is_compiling", lambda: True)
            torch.manual_seed(4)
            got = randomized_quantization(x, num_bins=5, channel_dim=dim, collapse=collapse, p=p)
        assert torch.equal(expected.nan_to_num(9.0), got.nan_to_num(9.0))
    clean = torch.randn(6, 7, 5)  # the default path takes the lerp lookup here
    torch.manual_seed(4)
    expected = randomized_quantization(clean, num_bins=5, collapse=collapse, p=p)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.manual_seed(4)
    assert torch.equal(expected, randomized_quantization(clean, num_bins=5, collapse=collapse, p=p))


def test_compile_mode_is_exposed_on_the_module():
    assert "compile='reduce-overhead'" in repr(RandomizedQuantization(compile="reduce-overhead"))
    assert "compile" not in repr(RandomizedQuantization())
