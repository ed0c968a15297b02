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
