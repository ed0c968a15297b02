"""The protocol config group: ``protocol=dabs`` is the paper's DABS 1.0 protocol, setting by setting
(../shared/spec/protocol.md), and experiments (sweeps) combine with either protocol."""

import pytest
from omegaconf import OmegaConf

from dabs_rq.encoder import build_encoder
from dabs_rq.results.protocol import digest, flatten, portable, protocol_settings
from tests.conftest import compose_config

#: protocol.md, every row whose verdict is "same" or "changes numbers": the value DABS 1.0 uses.
DABS_1_0 = {
    # encoder: dim 256, depth 12, 8 heads x 64, MLP 512, dropout 0.1 (MLP, output projection, embeddings),
    # no dropout on the attention weights, mean pooling over L+1 tokens, LayerNorm + Linear 256 -> 128 head
    "model.dim": 256,
    "model.depth": 12,
    "model.heads": 8,
    "model.dim_head": 64,
    "model.mlp_dim": 512,
    "model.dropout": 0.1,
    "model.emb_dropout": 0.1,
    "model.attn_dropout": 0.0,
    "model.pool": "mean",
    "model.out_dim": 128,
    # pretraining: 100k steps, checkpoint every 20k, AdamW 1e-4 / 1e-4, the domain's batch on one device
    "pretrain.max_steps": 100000,
    "pretrain.checkpoint_every_n_steps": 20000,
    "pretrain.batch_size": None,
    "pretrain.optimizer._target_": "torch.optim.AdamW",
    "pretrain.optimizer.lr": 1e-4,
    "pretrain.optimizer.weight_decay": 1e-4,
    "pretrain.lr_scaling": "none",
    "batch_scope": "job",
    # transfer: frozen encoder in the loop, 100 epochs AdamW 1e-4 / 1e-4, dataset batch, drop_last, per-batch
    # correlation averaged over the epoch
    "transfer.mode": "online",
    "transfer.epochs": 100,
    "transfer.batch_size": None,
    "transfer.drop_last": True,
    "transfer.correlation": "batch_mean",
    "transfer.optimizer._target_": "torch.optim.AdamW",
    "transfer.optimizer.lr": 1e-4,
    "transfer.optimizer.weight_decay": 1e-4,
    # MS-COCO pretraining rows: DABS 1.0 has one per instance annotation (2.0: one per image)
    "dataset_overrides.mscoco.reader.rows": "per_instance",
}
#: DABS's batch per pretraining domain (protocol.md: 64 images/speech/X-ray/VQA, 128 text, 256 sensor).
DABS_BATCH = {
    "imagenet": 64,
    "librispeech": 64,
    "chexpert": 64,
    "mscoco": 64,
    "wikitext103": 128,
    "mc4": 128,
    "pamap2": 256,
}


def _flat(cfg) -> dict:
    return flatten(OmegaConf.to_container(cfg, resolve=False))


@pytest.mark.parametrize(
    "extra",
    [[], ["experiment=paper"], ["experiment=ablation_bins", "protocol=dabs"], ["experiment=embedded", "protocol=dabs"]],
)
def test_protocol_dabs_composes_to_every_dabs_setting_of_protocol_md(extra):
    cfg = compose_config(
        ["domain=imagenet", "protocol=dabs", *extra] if "protocol=dabs" not in extra else ["domain=imagenet", *extra]
    )
    flat = _flat(cfg)
    wrong = {k: (flat.get(k, "<missing>"), v) for k, v in DABS_1_0.items() if flat.get(k, "<missing>") != v}
    assert not wrong, f"protocol=dabs differs from DABS 1.0 (got, expected): {wrong}"
    assert cfg.protocol.name == "dabs" and cfg.trainer.precision == "auto"


def test_protocol_dabs_is_the_default_and_every_domain_keeps_the_dabs_batch():
    from dabs_rq.data import domains

    assert compose_config(["domain=imagenet"]).protocol.name == "dabs"
    for name, batch in DABS_BATCH.items():
        assert domains.load(name).batch_size == batch, name


def test_the_dabs_encoder_has_no_attention_weight_dropout_and_mscoco_rows_are_documented():
    cfg = compose_config(["domain=imagenet", "protocol=dabs"])
    encoder = build_encoder(
        cfg.model, OmegaConf.create([{"_target_": "dabs_rq.encoder.TokenEmbedding", "seq_len": 4, "vocab_size": 10}])
    )
    assert all(block.attn.dropout == 0.0 and block.dropout == 0.1 for block in encoder.blocks)
    assert compose_config(["domain=imagenet", "model.attn_dropout=0.1"]).model.attn_dropout == 0.1  # kept option


def test_protocol_dabs_reads_mscoco_as_dabs_1_0_and_smoke_keeps_the_yaml_default():
    from dabs_rq.data import domains

    dabs = compose_config(["domain=mscoco", "protocol=dabs"])
    assert domains.load("mscoco", overrides=dabs.dataset_overrides.mscoco).reader.rows == "per_instance"
    assert domains.load("mscoco").reader.rows == "per_image"  # DABS 2.0 rows unless the protocol says otherwise
    assert "mscoco" not in compose_config(["domain=mscoco", "protocol=smoke"]).dataset_overrides


def test_the_emix_baseline_is_dabs_e_mix():
    """protocol.md: lambda ~ Beta(1, 1) folded to >= 0.5, temperature 0.2 (the same under either protocol)."""
    for protocol in ("dabs", "smoke"):
        emix = compose_config(["domain=imagenet", "algorithm=emix", f"protocol={protocol}"]).algorithm.module
        assert emix.temperature == 0.2 and emix.alpha == 1.0


def test_16_mixed_is_selectable_for_exact_replication():
    assert compose_config(["domain=imagenet", "trainer.precision=16-mixed"]).trainer.precision == "16-mixed"


@pytest.mark.parametrize("experiment", ["embedded", "ablation_bins", "ablation_p"])
def test_experiments_run_at_the_smoke_protocol_unless_told_otherwise(experiment):
    cfg = compose_config([f"experiment={experiment}", "domain=embedded_image"])
    assert cfg.protocol.name == "smoke" and cfg.model.dim == 64 and cfg.pretrain.max_steps == 300
    assert cfg.transfer.mode == "cached_features" and cfg.transfer.drop_last is False
    dabs = compose_config([f"experiment={experiment}", "domain=embedded_image", "protocol=dabs"])
    assert dabs.protocol.name == "dabs" and dabs.model.dim == 256 and dabs.pretrain.max_steps == 100000
    assert dabs.experiment_name == cfg.experiment_name  # the sweep is the same; only the protocol changed


def test_paper_experiment_sweeps_the_table_1_grid():
    cfg = compose_config(["experiment=paper", "domain=imagenet"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert set(params.domain.split(",")) == set(DABS_BATCH) and params.algorithm == "none,emix,rq"
    assert cfg.protocol.name == "dabs" and cfg.experiment_name == "paper"


def test_protocol_fingerprint_ignores_speed_settings_but_not_number_settings():
    base = OmegaConf.to_container(compose_config(["domain=imagenet"]), resolve=False)
    fast = OmegaConf.to_container(
        compose_config(["domain=imagenet", "model.compile=true", "pretrain.num_workers=2"]), resolve=False
    )
    assert digest(protocol_settings(base)) == digest(protocol_settings(fast))
    for override in (
        "model.attn_dropout=0.1",
        "pretrain.max_steps=10",
        "transfer.drop_last=false",
        "transfer.correlation=split",
        "transfer.mode=cached_features",
        "batch_scope=device",
    ):
        other = OmegaConf.to_container(compose_config(["domain=imagenet", override]), resolve=False)
        assert digest(protocol_settings(other, world_size=4)) != digest(protocol_settings(base)), override
    # the device count matters only where it changes the numbers
    assert digest(protocol_settings(base, world_size=4)) == digest(protocol_settings(base, world_size=1))


def test_portable_paths_name_their_root():
    out = portable(
        {"root": "/data/dabs/x.csv", "list": ["/home/u/a", "rel"], "n": 1},
        {"data_root": "/data/dabs", "home": "/home/u"},
    )
    assert out == {"root": "<data_root>/x.csv", "list": ["<home>/a", "rel"], "n": 1}


def test_transfer_keeps_every_epochs_test_metric_and_reports_the_last(tmp_path, data_cache):
    from dabs_rq.run import run

    cfg = compose_config(
        [
            "experiment=embedded",
            "domain=embedded_sensor",
            "algorithm=none",
            "model=tiny",
            "logger=none",
            "transfer.epochs=3",
            "trainer.enable_progress_bar=false",
            f"results_dir={tmp_path / 'results'}",
            f"output_dir={tmp_path / 'job'}",
            f"cache_dir={data_cache}",
        ]
    )
    (record,) = run(cfg)
    values = record["protocol"]["epoch_values"]
    assert len(values) == 3 and record["value"] == pytest.approx(values[-1], abs=1e-5)
    assert record["protocol"]["reported_epoch"].startswith("last")
    assert record["protocol"]["name"] == "smoke" and len(record["protocol"]["fingerprint"]) == 12
    assert record["protocol"]["settings"]["transfer.epochs"] == 3
    assert record["dataset_fingerprint"] == digest(record["datasets"])
    assert record["datasets"]["transfer"]["name"] == "embedded_watch_exercise"
    assert "host" not in record and not record["job_dir"].startswith("/")


@pytest.mark.slow
def test_transfer_drop_last_drops_the_partial_batch_and_refuses_a_batch_larger_than_the_set(
    tmp_path, data_cache, monkeypatch
):
    import dabs_rq.run as runner

    common = [
        "experiment=embedded",
        "domain=embedded_sensor",
        "algorithm=none",
        "model=tiny",
        "logger=none",
        "transfer.epochs=1",
        "trainer.enable_progress_bar=false",
        f"cache_dir={data_cache}",
        f"results_dir={tmp_path / 'results'}",
    ]
    with pytest.raises(ValueError, match="transfer.drop_last=true with batch 100000 leaves no full batch"):
        runner.run(
            compose_config(
                [*common, "transfer.drop_last=true", "transfer.batch_size=100000", f"output_dir={tmp_path / 'a'}"]
            )
        )
    loaders = []

    def spy(*args, **kwargs):
        loaders.append(runner.make_loader.__wrapped__(*args, **kwargs))
        return loaders[-1]

    spy.__wrapped__ = runner.make_loader
    monkeypatch.setattr(runner, "make_loader", spy)
    (record,) = runner.run(
        compose_config(
            [
                *common,
                "transfer.drop_last=true",
                "transfer.batch_size=7",
                f"output_dir={tmp_path / 'b'}",
                "experiment_name=drop",
            ]
        )
    )
    train, test = loaders
    n_train, n_test = record["protocol"]["n_train"], record["protocol"]["n_test"]
    assert n_train % 7 and len(train) == n_train // 7  # the partial batch is dropped ...
    assert sum(len(y) for _, y in test) == n_test  # ... but every test example is scored
    assert record["protocol"]["drop_last"] is True and record["protocol"]["settings"]["transfer.drop_last"] is True
