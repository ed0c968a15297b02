"""Each pretraining algorithm's loss decreases over a few steps on a tiny fixed batch."""

import pytest
import torch

from dabs_rq.algorithms.base import info_nce
from dabs_rq.algorithms.emix import EMix
from dabs_rq.algorithms.none import NoPretraining
from dabs_rq.algorithms.rq import RQContrastive
from dabs_rq.augment import RandomizedQuantization
from dabs_rq.encoder import DomainAgnosticTransformer, SegmentEmbedding1d


def tiny_encoder():
    return DomainAgnosticTransformer(
        [SegmentEmbedding1d(32, 20, 5, 3)],
        dim=32,
        depth=2,
        heads=2,
        dim_head=16,
        mlp_dim=64,
        out_dim=16,
        dropout=0.0,
        emb_dropout=0.0,
    )


def loss_curve(algorithm, steps=40):
    torch.manual_seed(0)
    x = [torch.randn(16, 20, 3)]
    opt = torch.optim.AdamW(algorithm.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = algorithm.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


GRADIENTS = ["straight_through", "reference", "none"]


def rq(views):
    return lambda enc, gradient: RQContrastive(
        enc, quantizer=RandomizedQuantization(num_bins=8, channel_dim=-1), views=views, gradient=gradient
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "make, gradient",
    [pytest.param(lambda enc, gradient: EMix(enc), None, id="emix")]
    + [
        pytest.param(rq(views), gradient, id=f"rq_{views}-{gradient}")
        for views in ("clean_vs_rq", "rq_vs_rq")
        for gradient in GRADIENTS
    ],
)
def test_loss_decreases(make, gradient):
    torch.manual_seed(0)
    losses = loss_curve(make(tiny_encoder(), gradient))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, f"loss did not decrease: {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("gradient", ["straight_through", "reference"])
def test_rq_gradient_trains_the_embedder_even_without_a_clean_view(gradient):
    torch.manual_seed(0)
    algo = RQContrastive(tiny_encoder(), views="rq_vs_rq", gradient=gradient)
    algo.loss([torch.randn(8, 20, 3)]).backward()
    assert algo.encoder.embedding.embedders[0].proj.weight.grad.abs().sum() > 0
    algo = RQContrastive(tiny_encoder(), views="rq_vs_rq", gradient="none")
    algo.loss([torch.randn(8, 20, 3)]).backward()
    assert algo.encoder.embedding.embedders[0].proj.weight.grad is None


def test_none_skips_pretraining_and_settings_are_recorded():
    assert NoPretraining(tiny_encoder()).requires_pretraining is False
    assert EMix(tiny_encoder()).requires_pretraining is True
    settings = RQContrastive(tiny_encoder(), views="rq_vs_rq").settings()
    assert settings["views"] == "rq_vs_rq" and settings["num_bins"] == 8


def test_info_nce_is_low_for_matching_pairs_and_high_for_shuffled():
    z = torch.randn(32, 8)
    assert info_nce(z, z, 0.2) < info_nce(z, z[torch.randperm(32)], 0.2)


def test_emix_loss_matches_a_direct_computation():
    """The DABS e-Mix objective, written out independently with the same random draws."""
    torch.manual_seed(0)
    enc = tiny_encoder().eval()
    algo = EMix(enc)
    x = [torch.randn(6, 20, 3)]
    torch.manual_seed(5)
    loss = algo.loss(x)
    torch.manual_seed(5)
    e = enc.embed(x)
    lam = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0)).sample((6,))
    lam = torch.maximum(lam, 1 - lam)
    perm = torch.randperm(6)
    mixed = lam.view(6, 1, 1) * e + (1 - lam.view(6, 1, 1)) * e[perm]
    zm = torch.nn.functional.normalize(enc.encode(mixed, "projection"), dim=1)
    ze = torch.nn.functional.normalize(enc.encode(e, "projection"), dim=1)
    logits = zm @ ze.T / 0.2
    ce = torch.nn.functional.cross_entropy
    expected = (
        lam * ce(logits, torch.arange(6), reduction="none") + (1 - lam) * ce(logits, perm, reduction="none")
    ).mean()
    torch.testing.assert_close(loss, expected)


def test_bad_algorithm_settings_are_rejected():
    with pytest.raises(ValueError, match="views"):
        RQContrastive(tiny_encoder(), views="three")
    with pytest.raises(ValueError, match="temperature"):
        EMix(tiny_encoder(), temperature=0)


# --------------------------------------------------------------------------- beyond the paper: shed, mae, rq_emix

from dabs_rq.algorithms.mae import MAE  # noqa: E402
from dabs_rq.algorithms.rq_emix import RQEMix  # noqa: E402
from dabs_rq.algorithms.shed import ShED  # noqa: E402
from dabs_rq.encoder import PatchEmbedding2d, TokenEmbedding  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    [
        lambda enc: ShED(enc),
        lambda enc: MAE(enc),
        lambda enc: RQEMix(enc),
        lambda enc: RQEMix(enc, gradient="reference"),
        lambda enc: RQEMix(enc, gradient="none"),
    ],
    ids=["shed", "mae", "rq_emix", "rq_emix_reference", "rq_emix_none"],
)
def test_new_algorithms_loss_decreases(make):
    torch.manual_seed(0)
    losses = loss_curve(make(tiny_encoder()), steps=60)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, f"loss did not decrease: {first:.3f} -> {last:.3f}"


def test_shed_moves_exactly_the_labelled_positions():
    torch.manual_seed(0)
    shed = ShED(tiny_encoder(), corruption_rate=0.25)
    e = torch.arange(2 * 20 * 1, dtype=torch.float32).view(2, 20, 1).expand(2, 20, 4).clone()
    shuffled, labels = shed.shuffle(e)
    moved = (shuffled != e).any(dim=-1)
    assert torch.equal(moved, labels.bool()) and labels.sum(dim=1).tolist() == [5, 5]
    # a derangement of the chosen positions: same multiset of embeddings per sample
    assert torch.equal(shuffled.sort(dim=1).values, e.sort(dim=1).values)


def test_mae_reconstructs_patches_and_token_ids_of_several_inputs():
    torch.manual_seed(0)
    enc = DomainAgnosticTransformer(
        [PatchEmbedding2d(32, [8, 8], [4, 4], 1), TokenEmbedding(32, 6, 50)],
        dim=32,
        depth=2,
        heads=2,
        dim_head=16,
        mlp_dim=64,
        out_dim=16,
        dropout=0.0,
        emb_dropout=0.0,
    )
    mae = MAE(enc, corruption_rate=0.5)
    assert isinstance(mae.heads[1], torch.nn.Identity) and mae.heads[0][1].out_features == 16
    x = [torch.randn(16, 1, 8, 8), torch.randint(0, 50, (16, 6))]
    opt = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = mae.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def test_rq_emix_mixes_quantized_views_and_records_its_quantizer():
    torch.manual_seed(0)
    algo = RQEMix(tiny_encoder(), quantizer=RandomizedQuantization(num_bins=2, channel_dim=-1))
    e = torch.randn(4, 20, 32)
    mixed, lam, perm = algo.mix(e)
    assert mixed.shape == e.shape and (lam >= 0.5).all()
    # every sample of the mix is built from <= 2 + 2 values per channel (two 2-bin RQ views)
    assert max(len(torch.unique(mixed[0, :, c].detach().round(decimals=4))) for c in range(32)) <= 4
    assert algo.settings()["num_bins"] == 2 and algo.settings()["statistics"] == "channel"


@pytest.mark.parametrize("rate", [0.0, 1.5])
def test_corruption_rate_outside_0_1_is_rejected(rate):
    with pytest.raises(ValueError, match="corruption_rate must be in"):
        ShED(tiny_encoder(), corruption_rate=rate)


def test_instance_wise_statistics_share_one_set_of_bins_across_channels():
    torch.manual_seed(0)
    x = torch.randn(3, 10, 6)
    channel = RandomizedQuantization(num_bins=4, channel_dim=-1, collapse="middle", spacing="uniform")(x)
    instance = RandomizedQuantization(
        num_bins=4, channel_dim=-1, collapse="middle", spacing="uniform", statistics="instance"
    )(x)
    assert all(len(torch.unique(instance[i])) <= 4 for i in range(3))
    assert all(len(torch.unique(channel[i])) > 4 for i in range(3))
    # instance-wise = the whole sample quantized as one channel
    lo, hi = x.amin(dim=(1, 2), keepdim=True), x.amax(dim=(1, 2), keepdim=True)
    assert ((instance >= lo) & (instance <= hi)).all()
    with pytest.raises(ValueError, match="statistics must be one of channel, instance"):
        RandomizedQuantization(statistics="global")
