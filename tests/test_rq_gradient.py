"""The ``gradient`` option of the RQ algorithms: straight_through, reference (through min/max), none.

Whatever the mode, the RQ view is the quantizer's output bit for bit (same seed); only what
flows back to the embeddings differs. ``reference`` is checked against an oracle written here:
autograd through ``min + t * (max - min)`` with ``t = (q - min) / (max - min)`` detached.
"""

import pytest
import torch

from dabs_rq.algorithms.rq import GRADIENTS, RQContrastive, rq_view
from dabs_rq.algorithms.rq_emix import RQEMix
from dabs_rq.encoder import DomainAgnosticTransformer, SegmentEmbedding1d
from dabs_rq.ops import RandomizedQuantization

B, T, D = 6, 7, 4


def tiny_encoder():
    return DomainAgnosticTransformer(
        [SegmentEmbedding1d(16, 20, 5, 3)],
        dim=16,
        depth=1,
        heads=2,
        dim_head=8,
        mlp_dim=32,
        out_dim=8,
        dropout=0.0,
        emb_dropout=0.0,
    )


def quantizer(**kwargs):
    return RandomizedQuantization(**{"num_bins": 4, "channel_dim": -1, **kwargs})


def view_and_grad(rq, x, gradient, seed=0, upstream_seed=1):
    """(view, d(sum(w * view))/dx or None, w) for a random upstream gradient w."""
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    v = rq_view(rq, x, gradient)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(upstream_seed), dtype=x.dtype)
    if not v.requires_grad:
        return v, None, w
    (v * w).sum().backward()
    return v, x.grad, w


def oracle_grad(x, q, w, statistics, applied):
    """Autograd through min + t * (max - min), min / max over the finite values of each (sample,
    channel) or sample; elements RQ left unchanged (sample not applied, non-finite) pass through."""
    x = x.clone().requires_grad_(True)
    finite = torch.isfinite(x)
    low, high = x.masked_fill(~finite, float("inf")), x.masked_fill(~finite, float("-inf"))
    if statistics == "channel":  # channel_dim = -1 of [B, T, D]: over the tokens
        lo, hi = low.min(dim=1, keepdim=True)[0], high.max(dim=1, keepdim=True)[0]
    else:
        lo, hi = low.reshape(B, -1).min(dim=1)[0].view(B, 1, 1), high.reshape(B, -1).max(dim=1)[0].view(B, 1, 1)
    replaced = applied.view(B, 1, 1) & finite
    t = ((q - lo) / (hi - lo)).detach()
    t = torch.where(replaced & (hi != lo), t, torch.zeros_like(t))
    out = lo + t * (hi - lo)
    out = torch.where(replaced, out, x)  # as the reference's torch.where with p
    (out * w).sum().backward()
    return x.grad


@pytest.mark.parametrize("statistics", ["channel", "instance"])
@pytest.mark.parametrize("collapse", ["inside_random", "middle", "all_zeros"])
@pytest.mark.parametrize("p", [1.0, 0.5])
@pytest.mark.parametrize("gradient", GRADIENTS)
def test_the_view_is_the_quantizers_output_bit_for_bit(gradient, p, collapse, statistics):
    x = torch.randn(B, T, D)
    rq = quantizer(p=p, collapse=collapse, statistics=statistics)
    view, _, _ = view_and_grad(rq, x, gradient)
    torch.manual_seed(0)
    expected = rq(x)
    assert view.dtype == expected.dtype and torch.equal(view.view(torch.int32), expected.view(torch.int32))


@pytest.mark.parametrize("statistics", ["channel", "instance"])
@pytest.mark.parametrize("collapse", ["inside_random", "middle"])
def test_reference_gradient_is_autograd_through_min_and_max(statistics, collapse):
    x = torch.randn(B, T, D, dtype=torch.float64)
    rq = quantizer(collapse=collapse, statistics=statistics)
    view, grad, w = view_and_grad(rq, x, "reference")
    expected = oracle_grad(x, view.detach(), w, statistics, torch.ones(B, dtype=torch.bool))
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    # only the extremes of each channel (or sample) receive a gradient
    nonzero = (grad != 0).sum(dim=1 if statistics == "channel" else (1, 2))
    assert (nonzero <= 2).all() and (nonzero > 0).all()


@pytest.mark.parametrize("statistics", ["channel", "instance"])
def test_samples_left_unchanged_under_p_get_the_identity_gradient(statistics):
    x = torch.randn(B, T, D, dtype=torch.float64)
    rq = quantizer(p=0.5, statistics=statistics)
    torch.manual_seed(0)
    q, applied = rq.forward_with_applied(x)
    # the mask says exactly which samples were quantized (random data: a quantized sample always changes)
    assert torch.equal(applied, (q != x).flatten(1).any(dim=1))
    assert applied.any() and not applied.all(), "the seed should give both kinds of samples"
    view, grad, w = view_and_grad(rq, x, "reference")
    assert torch.equal(view, q)
    torch.testing.assert_close(grad[~applied], w[~applied], rtol=0, atol=0)
    torch.testing.assert_close(grad, oracle_grad(x, q, w, statistics, applied), rtol=1e-12, atol=1e-12)


def test_forward_with_applied_matches_forward_at_the_edges_of_p():
    x = torch.randn(B, T, D)
    for p, value in ((1.0, True), (0.0, False)):
        torch.manual_seed(3)
        q, applied = quantizer(p=p).forward_with_applied(x)
        torch.manual_seed(3)
        assert torch.equal(q, quantizer(p=p)(x)) and applied.tolist() == [value] * B
    q, applied = quantizer().forward_with_applied(torch.empty(0, T, D))
    assert q.shape == (0, T, D) and applied.shape == (0,)


def test_non_finite_elements_get_the_identity_gradient_and_are_ignored_by_min_max():
    x = torch.randn(B, T, D, dtype=torch.float64)
    x[0, 1, 2], x[3, 0, 0], x[4, 5, 1] = float("nan"), float("inf"), float("-inf")
    bad = ~torch.isfinite(x)
    view, grad, w = view_and_grad(quantizer(), x, "reference")
    assert torch.equal(view[bad].isnan(), x[bad].isnan()) and torch.equal(view[bad & ~x.isnan()], x[bad & ~x.isnan()])
    assert torch.isfinite(grad).all() and torch.equal(grad[bad], w[bad])
    expected = oracle_grad(x, view.detach(), w, "channel", torch.ones(B, dtype=torch.bool))
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_all_zeros_gives_zero_gradient():
    x = torch.randn(B, T, D)
    view, grad, _ = view_and_grad(quantizer(collapse="all_zeros"), x, "reference")
    assert (view == 0).all() and torch.equal(grad, torch.zeros_like(x))


def test_constant_channels_and_huge_magnitudes_give_finite_gradients():
    x = torch.randn(B, T, D)
    x[0, :, 1] = 2.5  # constant channel: t = 0, the gradient goes to min (shared by the tied elements)
    x[1, :, 0] = torch.linspace(-3e38, 3e38, T)  # max - min overflows float32
    view, grad, w = view_and_grad(quantizer(), x, "reference")
    assert torch.isfinite(grad).all()
    # out = lo + t (hi - lo): the gradients of a channel add up to the upstream gradients' sum
    torch.testing.assert_close(grad.sum(dim=1), w.sum(dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad[0, :, 1], w[0, :, 1].sum().expand(T) / T)


def test_straight_through_gives_the_identity_gradient_and_none_gives_none():
    x = torch.randn(B, T, D)
    _, grad, w = view_and_grad(quantizer(p=0.5), x, "straight_through")
    assert torch.equal(grad, w)
    view, grad, _ = view_and_grad(quantizer(p=0.5), x, "none")
    assert grad is None and not view.requires_grad


def test_none_gives_no_gradient_to_the_embeddings_from_the_rq_branch():
    """clean_vs_rq: with ``none`` the embeddings' gradient is the clean branch's alone."""
    torch.manual_seed(0)
    algo = RQContrastive(tiny_encoder(), views="clean_vs_rq", gradient="none")
    e = torch.randn(4, 4, 16, requires_grad=True)
    z_rq = algo.encoder.encode(algo.view(e), output="projection")
    (z_rq.sum()).backward()
    assert e.grad is None
    emix = RQEMix(tiny_encoder(), gradient="none")
    mixed, _, _ = emix.mix(e)
    assert not mixed.requires_grad


@pytest.mark.parametrize("make", [RQContrastive, RQEMix], ids=["rq", "rq_emix"])
def test_gradient_is_validated_and_recorded(make):
    with pytest.raises(ValueError, match="gradient must be one of straight_through, reference, none; got 'ste'"):
        make(tiny_encoder(), gradient="ste")
    with pytest.raises(TypeError):
        make(tiny_encoder(), straight_through=True)  # the old boolean is gone
    assert make(tiny_encoder(), gradient="reference").settings()["gradient"] == "reference"
    assert make(tiny_encoder()).settings()["gradient"] == "straight_through"


def test_rq_emix_uses_the_same_view():
    torch.manual_seed(0)
    e = torch.randn(4, 4, 16, requires_grad=True)
    algo = RQEMix(tiny_encoder(), quantizer=quantizer(), gradient="reference")
    torch.manual_seed(1)
    mixed, lam, perm = algo.mix(e)
    torch.manual_seed(1)
    view = rq_view(algo.quantizer, e, "reference")
    lam_e = lam.view(4, 1, 1)
    assert torch.equal(mixed, lam_e * view + (1 - lam_e) * view[perm].detach())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile", [False, "reduce-overhead"])
def test_reference_gradient_on_cuda(compile):
    x = torch.randn(B, T, D, dtype=torch.float32, device="cuda")
    rq = quantizer(p=0.5, compile=compile)
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(0)
    view = rq_view(rq, xg, "reference")
    torch.manual_seed(0)
    expected = rq(x)
    assert torch.equal(view, expected)
    w = torch.randn_like(x)
    (view * w).sum().backward()
    applied = (expected != x).flatten(1).any(dim=1)
    oracle = oracle_grad(x.cpu().double(), expected.cpu().double(), w.cpu().double(), "channel", applied.cpu())
    torch.testing.assert_close(xg.grad.cpu().double(), oracle, rtol=1e-4, atol=1e-5)
