"""Encoder output shapes for every input type, and embedder behaviour."""

import pytest
import torch

from dabs_rq.encoder import (
    DomainAgnosticTransformer,
    MultiInputEmbedding,
    PatchEmbedding2d,
    SegmentEmbedding1d,
    TokenEmbedding,
)

DIM = 32


def encoder(*embedders, **kw):
    """A small encoder with dropout on the attention weights too (the kept 0.1 option), so that SDPA's
    dropout is exercised; DABS's own setting (attn_dropout=0) is tested below."""
    kw.setdefault("attn_dropout", 0.1)
    return DomainAgnosticTransformer(
        list(embedders), dim=DIM, depth=2, heads=2, dim_head=8, mlp_dim=64, out_dim=16, **kw
    )


@pytest.mark.parametrize(
    "embedder,inputs,tokens",
    [
        (PatchEmbedding2d(DIM, [28, 28], [7, 7], 1), [torch.randn(3, 1, 28, 28)], 16),
        (PatchEmbedding2d(DIM, [32, 32], [16, 16], 3), [torch.randn(3, 3, 32, 32)], 4),
        (SegmentEmbedding1d(DIM, 100, 5, 6), [torch.randn(3, 100, 6)], 20),
        (TokenEmbedding(DIM, 12, 50), [torch.randint(0, 50, (3, 12))], 12),
    ],
)
def test_every_input_type_gives_pooled_tokens_and_projection_shapes(embedder, inputs, tokens):
    model = encoder(embedder)
    emb = model.embed(inputs)
    assert emb.shape == (3, tokens, DIM)
    assert model(inputs).shape == (3, DIM)
    assert model.encode(emb, output="tokens").shape == (3, tokens + 1, DIM)
    assert model.encode(emb, output="projection").shape == (3, 16)


def test_multi_input_concatenates_image_then_text():
    image = PatchEmbedding2d(DIM, [16, 16], [8, 8], 3)
    text = TokenEmbedding(DIM, 6, 30)
    model = encoder(image, text)
    inputs = [torch.randn(2, 3, 16, 16), torch.randint(0, 30, (2, 6))]
    emb = model.embed(inputs)
    assert emb.shape == (2, 4 + 6, DIM)
    assert torch.equal(emb[:, :4], image(inputs[0])) and torch.equal(emb[:, 4:], text(inputs[1]))
    assert model(inputs).shape == (2, DIM)
    assert model.input_spec() == [image.spec(), text.spec()]
    with pytest.raises(ValueError, match="expected 2 inputs"):
        model.embed(inputs[:1])


def test_patchify_matches_the_dabs_p1_p2_c_order():
    emb = PatchEmbedding2d(DIM, [4, 4], [2, 2], 2)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    patches = emb.patchify(x)
    # first patch: rows 0-1, cols 0-1, channels interleaved last
    expected = torch.stack([x[0, :, 0, 0], x[0, :, 0, 1], x[0, :, 1, 0], x[0, :, 1, 1]]).reshape(-1)
    assert torch.equal(patches[0, 0], expected)


def test_segments_group_consecutive_steps():
    emb = SegmentEmbedding1d(DIM, 6, 3, 2)
    x = torch.arange(12, dtype=torch.float32).reshape(1, 6, 2)
    assert torch.equal(emb.patchify(x)[0, 1], x[0, 3:6].reshape(-1))


def test_bad_specs_are_rejected():
    with pytest.raises(ValueError, match="divisible"):
        PatchEmbedding2d(DIM, [30, 30], [7, 7], 1)
    with pytest.raises(ValueError, match="divisible"):
        SegmentEmbedding1d(DIM, 10, 3, 1)
    with pytest.raises(ValueError, match="pool"):
        encoder(TokenEmbedding(DIM, 4, 10), pool="max")
    with pytest.raises(ValueError, match="at least one"):
        MultiInputEmbedding([])


def test_cls_pooling_and_eval_mode_is_deterministic():
    model = encoder(TokenEmbedding(DIM, 5, 10), pool="cls").eval()
    x = [torch.randint(0, 10, (2, 5))]
    assert torch.equal(model(x), model(x))
    assert torch.equal(model(x), model.encode(model.embed(x), output="tokens")[:, 0])


# --------------------------------------------------------------------------- attention and dropout

from dabs_rq.encoder.transformer import Attention  # noqa: E402


def _dabs_attention(attn, x):
    """DABS's attention, written out: softmax(q k^T / sqrt(d)) v per head, then the output projection."""
    b, n, _ = x.shape
    q, k, v = (t.reshape(b, n, attn.heads, -1).transpose(1, 2) for t in attn.to_qkv(x).chunk(3, dim=-1))
    weights = (q @ k.transpose(-1, -2) * attn.dim_head**-0.5).softmax(dim=-1)
    return attn.to_out((weights @ v).transpose(1, 2).reshape(b, n, -1))


def test_sdpa_attention_computes_the_dabs_formula_with_its_gradients():
    torch.manual_seed(0)
    attn = Attention(DIM, heads=2, dim_head=8, dropout=0.0).double().train()
    x = torch.randn(3, 10, DIM, dtype=torch.float64, requires_grad=True)
    out, ref = attn(x), _dabs_attention(attn, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    grad = torch.randn_like(out)
    params = [x, *attn.parameters()]
    for got, want in zip(torch.autograd.grad(out, params, grad), torch.autograd.grad(ref, params, grad)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_mean_pooling_averages_every_token_cls_included():
    model = encoder(SegmentEmbedding1d(DIM, 20, 2, 3)).eval()
    x = [torch.randn(4, 20, 3)]
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.encode(model.embed(x), output="tokens").mean(dim=1))


def test_training_with_dropout_is_live_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = encoder(SegmentEmbedding1d(DIM, 20, 2, 3)).train()
    x = [torch.randn(4, 20, 3)]
    a, b = model(x), model(x)
    assert not torch.equal(a, b)  # dropout is live
    (a.square().mean() + model.encode(model.embed(x), output="projection").mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_dropout_masks_follow_the_seed():
    """torch.manual_seed fixes every dropout mask (a resumed run redraws the same ones); another seed draws others."""
    model = encoder(SegmentEmbedding1d(DIM, 20, 2, 3)).train()
    x = [torch.randn(4, 20, 3)]
    outputs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        outputs.append(model(x))
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])


def test_attention_weight_dropout_alone_makes_attention_random():
    torch.manual_seed(0)
    attn = Attention(DIM, heads=2, dim_head=8, dropout=0.0).train()
    x = torch.randn(2, 7, DIM)
    assert torch.equal(attn(x), attn(x))  # attn_dropout=0: deterministic in training mode
    attn.dropout = 0.3
    assert not torch.equal(attn(x), attn(x))
    assert torch.equal(attn.eval()(x), attn(x))  # and none in eval mode


def test_training_runs_under_bf16_autocast():
    torch.manual_seed(0)
    model = encoder(SegmentEmbedding1d(DIM, 20, 2, 3)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model([torch.randn(2, 20, 3)])
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all()
    assert all(p.grad is not None for p in model.blocks.parameters())


def test_attention_weights_have_no_dropout_by_default_as_in_dabs():
    """DABS's Attention goes from the softmax straight into ``attn @ v``: ``attn_dropout`` defaults to 0,
    so training-mode noise comes only from the embedding, projection and MLP dropout."""
    model = DomainAgnosticTransformer(
        [SegmentEmbedding1d(DIM, 20, 2, 3)],
        dim=DIM,
        depth=2,
        heads=2,
        dim_head=8,
        mlp_dim=64,
        out_dim=16,
        dropout=0.0,
        emb_dropout=0.0,
    ).train()
    assert all(block.attn.dropout == 0.0 for block in model.blocks)
    x = [torch.randn(4, 20, 3)]
    assert torch.equal(model(x), model(x))  # nothing random left in training mode
    noisy = encoder(SegmentEmbedding1d(DIM, 20, 2, 3), dropout=0.0, emb_dropout=0.0).train()
    assert not torch.equal(noisy(x), noisy(x))  # attn_dropout=0.1: the weights' dropout is live
    with pytest.raises(ValueError, match="attn_dropout must be a number in"):
        encoder(TokenEmbedding(DIM, 4, 10), attn_dropout=1.5)
