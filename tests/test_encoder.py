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
    """A small encoder with dropout on the attention weights too (the kept 0.1 option), so that every
    attention path's dropout is exercised; DABS's own setting (attn_dropout=0) is tested below."""
    kw.setdefault("attn_dropout", 0.1)
    return DomainAgnosticTransformer(list(embedders), dim=DIM, depth=2, heads=2, dim_head=8, mlp_dim=64, out_dim=16, **kw)


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


# --------------------------------------------------------------------------- attention paths

from dabs_rq.encoder import transformer as T  # noqa: E402

PATHS = ("sdpa", "math", "chunked")


def _twins(seed=0, **kw):
    """One encoder per attention path (and auto), all with the same weights."""
    models = {}
    for path in (*PATHS, "auto"):
        torch.manual_seed(seed)
        models[path] = encoder(SegmentEmbedding1d(DIM, 20, 2, 3), attention=path, **kw)
    return models


@pytest.mark.parametrize("path", PATHS)
def test_attention_paths_give_the_same_eval_output(path):
    models = _twins()
    x = [torch.randn(4, 20, 3)]
    ref = models["sdpa"].eval().encode(models["sdpa"].embed(x), output="tokens")
    model = models[path].eval()
    torch.testing.assert_close(model.encode(model.embed(x), output="tokens"), ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref.mean(dim=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", PATHS)
def test_attention_paths_give_the_same_gradients_without_dropout(path):
    models = _twins(dropout=0.0, emb_dropout=0.0, attn_dropout=0.0)
    x = torch.randn(3, 10, DIM, dtype=torch.float64)
    grads = {}
    for name in ("sdpa", path):
        model = models[name].double().train()
        out = model.encode(x, output="projection")
        out.square().sum().backward()
        grads[name] = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert grads[path].keys() == grads["sdpa"].keys()
    for key, grad in grads[path].items():
        torch.testing.assert_close(grad, grads["sdpa"][key], rtol=1e-9, atol=1e-10, msg=key)


@pytest.mark.parametrize("path", (*PATHS, "auto"))
def test_attention_paths_train_with_dropout_and_every_parameter_gets_a_gradient(path):
    model = _twins()[path].train()
    x = [torch.randn(4, 20, 3)]
    a, b = model(x), model(x)
    assert not torch.equal(a, b)  # dropout is live
    (a.square().mean() + model.encode(model.embed(x), output="projection").mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_chunked_attention_matches_explicit_math_with_the_same_dropout_mask():
    """Forward and backward of the chunked kernel against autograd of softmax(qk^T/sqrt d) * mask @ v."""
    b, n, heads, d, p = 3, 9, 2, 4, 0.3
    qkv = torch.randn(b, n, 3 * heads * d, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(5)
    out = T.ChunkedAttention.apply(qkv, heads, p)
    grad = torch.randn_like(out)
    (dqkv,) = torch.autograd.grad(out, qkv, grad)
    # the masks it drew: chunk c from a generator seeded with one draw of the default one, plus c
    torch.manual_seed(5)
    seed = int(torch.empty((), dtype=torch.int64).random_(0, 2**62))
    mask = torch.empty(heads, b, n, n, dtype=torch.uint8)
    for c, j, rows in T._chunks(b, heads, T._chunk(b, n, qkv.element_size(), heads)):
        T.chunk_keep_mask(mask[j, rows], p, seed + c)
    assert 0 < mask.float().mean() < 1
    q, k, v = qkv.view(b, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
    attn = (q @ k.transpose(-1, -2) * d**-0.5).softmax(-1) * mask.transpose(0, 1)
    ref = (attn @ v).transpose(1, 2).reshape(b, n, heads * d)
    (dref,) = torch.autograd.grad(ref, qkv, grad)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(dqkv, dref)
    assert torch.autograd.gradcheck(lambda t: T.ChunkedAttention.apply(t, heads, 0.0), (qkv,))


def test_chunked_attention_does_not_depend_on_the_thread_count():
    qkv = torch.randn(4, 11, 3 * 2 * 8)
    grad = torch.randn(4, 11, 2 * 8)
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 3):
            torch.set_num_threads(n_threads)
            x = qkv.clone().requires_grad_()
            torch.manual_seed(0)
            out = T.ChunkedAttention.apply(x, 2, 0.2)
            out.backward(grad)
            results.append((out.detach(), x.grad))
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-6)  # same masks


def test_chunked_attention_splits_the_batch_into_cache_sized_chunks(monkeypatch):
    monkeypatch.setattr(T, "CHUNK_BYTES", 2 * 7 * 7 * 8)  # two rows of float64 7x7 scores per chunk
    monkeypatch.setattr(T, "MIN_CHUNKS", 4)
    assert T._chunk(5, 7, 8, heads=4) == 2  # ceil(5 / ceil(5 / 2))
    assert T._chunk(8, 3, 8, heads=2) == 4  # all 8 rows fit one chunk; split in 2 for 4 chunks
    assert [c for c, _, _ in T._chunks(5, 2, 2)] == list(range(6))
    qkv = torch.randn(5, 7, 3 * 2 * 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: T.ChunkedAttention.apply(t, 2, 0.0), (qkv,))


def test_keep_mask_rate_scale_and_seed():
    torch.manual_seed(0)
    mask = T.keep_mask((1000, 1000), 0.1)
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(1 - mask.mean().item() - 0.1) < 2e-3
    assert T.keep_scale(0.1) == pytest.approx(1 / (1 - round(0.1 * 65536) / 65536))
    torch.manual_seed(0)
    assert torch.equal(T.keep_mask((1000, 1000), 0.1), mask)  # torch.manual_seed fixes it
    assert T.keep_mask((3, 5), 0.5, dtype=torch.uint8).dtype == torch.uint8
    assert not T.fast_dropout(torch.zeros(1), 0.0, True) and not T.fast_dropout(torch.zeros(1), 1.0, True)
    assert not T.fast_dropout(torch.zeros(1), 0.1, False) and T.fast_dropout(torch.zeros(1), 0.1, True)


def test_cpu_dropout_keeps_the_expected_fraction_and_mean():
    """The fused CPU dropout is unbiased: x + dropout(y) has mean x + y."""
    torch.manual_seed(0)
    x, y = torch.zeros(200_000), torch.ones(200_000)
    out = T.dropout_add(x, y.clone(), 0.1, training=True)
    assert abs((out == 0).float().mean().item() - 0.1) < 3e-3
    assert abs(out.mean().item() - 1.0) < 5e-3
    assert torch.equal(T.dropout_add(x, y.clone(), 0.1, training=False), x + y)


def test_auto_picks_the_path_by_device_length_and_dropout():
    cpu = torch.device("cpu")
    assert T.choose_attention(65, cpu, 0.1) == "math"
    assert T.choose_attention(T.CHUNKED_MIN_TOKENS, cpu, 0.1) == "chunked"
    assert T.choose_attention(229, cpu, 0.0) == "sdpa"
    assert T.choose_attention(65, torch.device("cuda"), 0.1) == "sdpa"
    model = encoder(TokenEmbedding(DIM, 4, 10))
    x = torch.zeros(1, 200, DIM)
    assert model.train().blocks[0].attn.path(x) == "chunked"
    assert model.eval().blocks[0].attn.path(x) == "sdpa"
    with pytest.raises(ValueError, match="attention must be one of"):
        encoder(TokenEmbedding(DIM, 4, 10), attention="flash")


def test_attention_paths_run_under_bf16_autocast():
    models = _twins()
    x = [torch.randn(2, 20, 3)]
    for path in PATHS:
        model = models[path].train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().sum().backward()
        assert torch.isfinite(out.float()).all()
        assert all(p.grad is not None for p in model.blocks.parameters())


def test_attention_weights_have_no_dropout_by_default_as_in_dabs():
    """DABS's Attention goes from the softmax straight into ``attn @ v``: ``attn_dropout`` defaults to 0,
    so training-mode noise comes only from the embedding, projection and MLP dropout."""
    model = DomainAgnosticTransformer([SegmentEmbedding1d(DIM, 20, 2, 3)], dim=DIM, depth=2, heads=2, dim_head=8,
                                      mlp_dim=64, out_dim=16, dropout=0.0, emb_dropout=0.0).train()
    assert all(block.attn.dropout == 0.0 for block in model.blocks)
    x = [torch.randn(4, 20, 3)]
    assert torch.equal(model(x), model(x))  # nothing random left in training mode
    noisy = encoder(SegmentEmbedding1d(DIM, 20, 2, 3), dropout=0.0, emb_dropout=0.0).train()
    assert not torch.equal(noisy(x), noisy(x))  # attn_dropout=0.1: the weights' dropout is live
    with pytest.raises(ValueError, match="attn_dropout must be a number in"):
        encoder(TokenEmbedding(DIM, 4, 10), attn_dropout=1.5)
