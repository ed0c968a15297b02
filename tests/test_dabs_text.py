"""DABS text datasets (GLUE, WikiText-103, PAWS-X, mC4) read from tiny copies in their real on-disk formats.

Every dataset is loaded the way a run loads it (``DomainDataModule(domains.load(name), ...)``)
from fixtures written under a temporary data root, with tiny tokenizers built in the test.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, IterableDataset

from dabs_rq import tasks
from dabs_rq.data import domains
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.data.readers import text
from dabs_rq.data.readers.tokenize import encode, load_tokenizer
from dabs_rq.data.storage import DatasetMissingError
from dabs_rq.data.tensor_dataset import make_loader
from dabs_rq.run import run
from tests import text_fixtures as fx
from tests.conftest import compose_config
from tests.tokenizer_fixtures import write_bert_tokenizer

GLUE = ["cola", "mnli_matched", "mnli_mismatched", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]
PAWS = [f"paws_{lang}" for lang in fx.PAWS_LANGUAGES]


@pytest.fixture(scope="session")
def text_root(tmp_path_factory):
    """GLUE, PAWS-X and WikiText in the hub's parquet layout, mC4 as c4 json.gz shards, both tokenizers."""
    return fx.write_text_data_root(tmp_path_factory.mktemp("text_data"))


@pytest.fixture(scope="session")
def original_root(tmp_path_factory):
    """GLUE TSVs, PAWS-X (fr) TSVs and WikiText ``.tokens`` files as in the original archives."""
    return fx.write_original_layouts(tmp_path_factory.mktemp("text_original"))


def load_split(name_or_cfg, data_root, cache, split, download=False):
    cfg = domains.load(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    return DomainDataModule(cfg, cache_dir=cache, data_root=data_root, download=download).split(split)


def reader_error(call) -> DatasetMissingError:
    """The DatasetMissingError raised inside a reader (Hydra's ``instantiate`` wraps it in its own exception)."""
    with pytest.raises(Exception) as info:
        call()
    err = info.value
    while err is not None and not isinstance(err, DatasetMissingError):
        err = err.__cause__
    assert err is not None, f"no DatasetMissingError behind {info.value!r}"
    return err


def everything(dataset):
    """All rows of a batch-capable dataset in one batch: (ids [N, 128], labels [N])."""
    assert dataset.supports_batch_indexing
    (ids,), labels = dataset[list(range(len(dataset)))]
    return ids, labels


def glue_expected(name: str, split: str) -> pd.DataFrame:
    """The fixture rows a GLUE split must keep (no empty input), in file order."""
    reader = domains.load(name).reader
    hub_split = "train" if split == "train" else reader.eval_split
    frame = fx.glue_splits(reader.config)[hub_split]
    columns = list(text.GLUE_TASKS[reader.config].inputs)
    return frame[(frame[columns] != "").all(axis=1)].reset_index(drop=True)


def expected_ids(tokenizer, frame: pd.DataFrame, columns) -> torch.Tensor:
    columns = list(columns)
    return encode(tokenizer, list(frame[columns[0]]), list(frame[columns[1]]) if len(columns) > 1 else None)


@pytest.mark.parametrize("name", GLUE)
def test_glue_sets_load_train_and_validation_with_empty_rows_dropped(name, text_root, tmp_path):
    cfg = domains.load(name)
    tok = load_tokenizer("bert-base-uncased", text_root)
    columns = text.GLUE_TASKS[cfg.reader.config].inputs
    for split in ("train", "test"):
        dataset = load_split(name, text_root, tmp_path, split)
        expected = glue_expected(name, split)
        ids, labels = everything(dataset)
        assert ids.shape == (len(expected), 128) and ids.dtype == torch.int32
        assert torch.equal(ids, expected_ids(tok, expected, columns))  # shard order kept, pairs as pairs
        sep = tok.convert_tokens_to_ids("[SEP]")
        assert ((ids == sep).sum(dim=1) == len(columns)).all()
        assert ids[:, 0].eq(tok.convert_tokens_to_ids("[CLS]")).all()
        if name == "stsb":
            assert labels.dtype == torch.float32 and 0 <= labels.min() and labels.max() <= 5
            assert torch.allclose(labels, torch.tensor(expected.label.to_numpy(), dtype=torch.float32))
        else:
            assert labels.dtype == torch.int64 and labels.tolist() == expected.label.tolist()
            assert set(labels.tolist()) <= ({0, 1, 2} if name.startswith("mnli") else {0, 1})
    assert len(load_split(name, text_root, tmp_path, "train")) == fx.GLUE_TRAIN - 1
    eval_rows = fx.MNLI_MISMATCHED if name == "mnli_mismatched" else fx.GLUE_EVAL
    assert len(load_split(name, text_root, tmp_path, "test")) == eval_rows - 1
    task = instantiate(cfg.task)
    assert task.num_outputs == (3 if name.startswith("mnli") else 1)
    assert cfg.paper_name and cfg.domain == "English Text" and cfg.batch_size == 128


@pytest.mark.parametrize("name", ["cola", "mnli_matched", "mnli_mismatched", "mrpc", "qnli", "stsb"])
def test_glue_original_tsv_layout_gives_the_same_rows(name, text_root, original_root, tmp_path):
    for split in ("train", "test"):
        hub_ids, hub_labels = everything(load_split(name, text_root, tmp_path / "hub", split))
        ids, labels = everything(load_split(name, original_root, tmp_path / "tsv", split))
        assert torch.equal(labels, hub_labels)  # label strings (entailment, ...) and BOM header handled
        if name == "cola":  # row 0 was rewritten with literal quotes (GLUE TSVs are not quoted)
            tok = load_tokenizer("bert-base-uncased", original_root)
            assert torch.equal(ids[0], encode(tok, ['the "dog" is red'])[0])
            ids, hub_ids = ids[1:], hub_ids[1:]
        assert torch.equal(ids, hub_ids)


@pytest.mark.parametrize("layout", ["hub", "original"])
def test_wikitext_every_non_empty_line_is_one_example(layout, text_root, original_root, tmp_path):
    root = text_root if layout == "hub" else original_root
    tok = load_tokenizer("bert-base-uncased", root)
    for split, rows, offset in (("train", fx.WIKITEXT_TRAIN, 0), ("test", fx.WIKITEXT_EVAL, 50)):
        ids, labels = everything(load_split("wikitext103", root, tmp_path, split))
        lines = [line for line in fx.wikitext_lines(rows, offset) if line.strip()]
        assert ids.shape == (rows, 128) and ids.dtype == torch.int32 and not labels.any()
        assert torch.equal(ids, encode(tok, lines))


@pytest.mark.parametrize("name", PAWS)
def test_paws_x_pairs_drop_unlabelled_rows_and_keep_empty_sentences(name, text_root, tmp_path):
    cfg = domains.load(name)
    tok = load_tokenizer("xlm-roberta-base", text_root)
    frame = fx.paws_frame(cfg.reader.language, fx.PAWS_TRAIN, True)
    kept = frame[frame.label >= 0].reset_index(drop=True)
    ids, labels = everything(load_split(name, text_root, tmp_path, "train"))
    assert ids.shape == (fx.PAWS_TRAIN - 1, 128) and ids.dtype == torch.int32
    assert labels.tolist() == kept.label.tolist() and set(labels.tolist()) <= {0, 1}
    assert torch.equal(ids, expected_ids(tok, kept, ["sentence1", "sentence2"]))
    bos, eos, pad = (tok.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "<pad>"))
    assert ids[:, 0].eq(bos).all() and ((ids == eos).sum(dim=1) == 3).all() and ids[0, -1] == pad  # <s>a</s></s>b</s>
    assert len(load_split(name, text_root, tmp_path, "test")) == fx.PAWS_EVAL
    assert cfg.domain == "Multilingual Text" and cfg.inputs[0].vocab_size == 250002
    dropping = OmegaConf.merge(cfg, {"reader_options": {"drop_empty": True}})
    assert len(load_split(dropping, text_root, tmp_path, "train")) == fx.PAWS_TRAIN - 2


def test_paws_x_original_tsv_layout(text_root, original_root, tmp_path):
    for split in ("train", "test"):
        hub_ids, hub_labels = everything(load_split("paws_fr", text_root, tmp_path / "hub", split))
        ids, labels = everything(load_split("paws_fr", original_root, tmp_path / "tsv", split))
        assert torch.equal(ids, hub_ids) and torch.equal(labels, hub_labels)


def round_robin(rounds: int, validation: bool = False) -> list[str]:
    """The documents DABS's interleaving yields first: one per language in turn, shard by shard."""
    docs = [(k, d) for k in range(fx.C4_SHARDS) for d in range(fx.C4_DOCS_PER_SHARD)]
    return [fx.c4_text(lang, k, d, validation) for k, d in docs[:rounds] for lang in text.MC4_LANGUAGES]


def test_mc4_streams_the_seven_languages_round_robin(text_root, tmp_path):
    tok = load_tokenizer("xlm-roberta-base", text_root)
    stream = load_split("mc4", text_root, tmp_path, "train")
    assert isinstance(stream, IterableDataset) and not getattr(stream, "supports_batch_indexing", False)
    items = list(stream)
    rounds = fx.C4_SHARDS * fx.C4_DOCS_PER_SHARD
    assert (rounds - 1) * 7 < len(items) <= rounds * 7  # stops once a language is exhausted (DABS's default)
    first = round_robin(rounds - 1)
    assert torch.equal(torch.stack([ids for (ids,), _ in items[: len(first)]]), encode(tok, first))
    assert all(ids.dtype == torch.int32 and ids.shape == (128,) and label == 0 for (ids,), label in items)
    (batch,), labels = next(iter(DataLoader(stream, batch_size=8, drop_last=True)))
    assert batch.shape == (8, 128) and labels.tolist() == [0] * 8
    (val_first,), _ = next(iter(load_split("mc4", text_root, tmp_path, "test")))
    assert torch.equal(val_first, encode(tok, round_robin(1, validation=True)[:1])[0])


def test_mc4_shuffle_buffer_and_loader_workers(text_root, tmp_path):
    def documents(dataset, **loader):
        return [tuple(ids.tolist()) for (ids,), _ in DataLoader(dataset, batch_size=None, **loader)]

    cfg = domains.load("mc4")
    tok = load_tokenizer("xlm-roberta-base", text_root)
    every_doc = {tuple(row) for row in encode(tok, round_robin(fx.C4_SHARDS * fx.C4_DOCS_PER_SHARD)).tolist()}
    in_order = documents(load_split(cfg, text_root, tmp_path, "train"))
    shuffled = documents(
        load_split(OmegaConf.merge(cfg, {"reader_options": {"shuffle_buffer": 5}}), text_root, tmp_path, "train")
    )
    assert shuffled != in_order and len(set(shuffled)) == len(shuffled) and set(shuffled) <= every_doc
    by_workers = documents(load_split(cfg, text_root, tmp_path, "train"), num_workers=2)
    assert len(set(by_workers)) == len(by_workers) > 7 and set(by_workers) <= every_doc  # shards split by worker


def test_mc4_with_a_language_missing_says_which(tmp_path):
    fx.write_c4(tmp_path, languages=("en", "fr", "de", "zh", "es", "ja"))
    err = reader_error(lambda: load_split("mc4", tmp_path, tmp_path / "cache", "train"))
    assert re.search(r"mC4 shards missing in .*multilingual for ko \(expected multilingual/c4-ko\.tfrecord", str(err))


def test_mc4_without_local_shards_or_hub_says_how_to_get_them(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    err = reader_error(lambda: load_split("mc4", tmp_path, tmp_path / "cache", "train"))
    assert "mC4 could not be streamed from https://huggingface.co/datasets/allenai/c4" in str(err)
    assert f"multilingual/c4-<lang>.tfrecord-*.json.gz shards under {tmp_path / 'c4'}" in str(err)


@pytest.mark.parametrize(
    "name,where",
    [
        ("cola", "glue/cola"),
        ("mnli_mismatched", "glue/mnli"),
        ("paws_de", "paws-x/de"),
        ("wikitext103", "wikitext/wikitext-103-v1"),
    ],
)
def test_missing_dataset_says_where_and_how_to_get_it(name, where, tmp_path):
    with pytest.raises(DatasetMissingError) as err:
        load_split(name, tmp_path, tmp_path / "cache", "train")
    message = str(err.value)
    assert f"dataset '{name}' is not on disk" in message and str(tmp_path / where) in message
    assert "download=true" in message and domains.load(name).data.source in message


def test_missing_split_in_a_present_folder_names_both_layouts(text_root, tmp_path):
    fx.write_parquet(fx.glue_frame("rte", 4), tmp_path / "glue" / "rte", "train")
    err = reader_error(lambda: load_split("rte", tmp_path, tmp_path / "cache", "test"))
    assert re.search(r"glue/rte has neither validation-\*\.parquet .* nor dev\.tsv .*download=true", str(err))


def test_download_fetches_the_hub_files_into_the_data_root_then_runs_offline(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, repo_type, allow_patterns, local_dir):
        calls.append((repo_id, repo_type, list(allow_patterns)))
        for pattern in allow_patterns:
            config, split = pattern.split("/")[0], pattern.split("/")[1].split("-")[0]
            fx.write_parquet(fx.glue_splits(config)[split], tmp_path / "glue" / config, split)

    write_bert_tokenizer(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    dataset = load_split("sst2", tmp_path, tmp_path / "cache", "test", download=True)
    assert calls == [("nyu-mll/glue", "dataset", ["sst2/validation-*.parquet"])]
    assert len(dataset) == fx.GLUE_EVAL - 1 and (tmp_path / "glue/sst2/validation-00000-of-00001.parquet").exists()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", None)  # no network needed any more
    assert len(load_split("sst2", tmp_path, tmp_path / "cache2", "test")) == fx.GLUE_EVAL - 1


def test_token_ids_are_cached_and_reused_without_the_tokenizer(text_root, tmp_path, monkeypatch):
    first = everything(load_split("qnli", text_root, tmp_path, "train"))
    cached = sorted(p.name for p in (tmp_path / "text").glob("*.npy"))
    assert len(cached) == 2 and cached[0].startswith("glue-qnli-train-")
    assert np.load(tmp_path / "text" / cached[0], mmap_mode="r").dtype == np.int32

    def no_tokenizer(*args, **kwargs):
        raise AssertionError("the tokenizer must not be needed for cached ids")

    monkeypatch.setattr(text, "load_tokenizer", no_tokenizer)
    again = everything(load_split("qnli", text_root, tmp_path, "train"))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_binary_correlation_task_scores_cola_by_pearson_or_matthews():
    logits, labels = torch.tensor([[-2.0], [0.5], [1.0], [3.0]]), torch.tensor([0, 0, 1, 1])
    pearson = tasks.BinaryCorrelationTask("pearson")
    metric = pearson.metric()
    metric.update(*pearson.metric_inputs(logits, labels))
    assert math.isclose(float(metric.compute()), np.corrcoef([-2, 0.5, 1, 3], [0, 0, 1, 1])[0, 1], rel_tol=1e-5)
    assert pearson.num_outputs == 1 and pearson.describe()["metric"] == "pearson"
    assert torch.isclose(
        pearson.loss(logits, labels),
        torch.nn.functional.binary_cross_entropy_with_logits(logits.view(-1), labels.float()),
    )
    matthews = tasks.BinaryCorrelationTask("matthews")
    metric = matthews.metric()
    metric.update(*matthews.metric_inputs(logits, labels))
    assert math.isclose(float(metric.compute()), 0.57735, rel_tol=1e-4)  # one false positive of four
    with pytest.raises(ValueError, match="metric must be one of pearson, matthews"):
        tasks.BinaryCorrelationTask("mcc")


def run_overrides(domain, data_root, tmp_path, data_cache):
    return [
        "model=tiny",
        "logger=none",
        "algorithm=rq",
        "pretrain.max_steps=2",
        "pretrain.batch_size=8",
        "pretrain.num_workers=0",
        "transfer.epochs=1",
        "transfer.mode=cached_features",
        "transfer.drop_last=false",  # fixture splits are smaller than a DABS transfer batch
        "trainer.enable_progress_bar=false",
        f"domain={domain}",
        f"data_root={data_root}",
        f"results_dir={tmp_path / 'results'}",
        f"output_dir={tmp_path / 'out'}",
        f"cache_dir={data_cache}",
        "experiment_name=text",
    ]


def test_wikitext_pretraining_then_every_glue_transfer_writes_a_record(text_root, tmp_path, data_cache):
    records = run(compose_config(run_overrides("wikitext103", text_root, tmp_path, data_cache)))
    assert [r["dataset"] for r in records] == GLUE
    metrics = {r["dataset"]: r["metric"] for r in records}
    assert metrics["cola"] == "pearson" and metrics["stsb"] == "spearman" and metrics["rte"] == "accuracy"
    for record in records:
        assert math.isfinite(record["value"]) and record["pretraining"]["steps"] == 2
        assert record["protocol"]["n_train"] == fx.GLUE_TRAIN - 1
    stored = json.loads((tmp_path / "results/records/text/mnli_mismatched/rq/seed0.json").read_text())
    assert stored["paper_name"] == "MNLI_Mismatched" and stored["protocol"]["n_test"] == fx.MNLI_MISMATCHED - 1


def loader_accepts_iterables() -> bool:
    """Whether the shared loader builder can feed an IterableDataset to pretraining (needs shuffle=False)."""

    class Stream(IterableDataset):
        def __iter__(self):
            yield from range(4)

    try:
        make_loader(Stream(), batch_size=2, shuffle=True, drop_last=True)
    except ValueError:
        return False
    return True


@pytest.mark.skipif(
    not loader_accepts_iterables(),
    reason="dabs_rq.data.tensor_dataset.make_loader passes shuffle=True to an IterableDataset "
    "(torch rejects it); mC4 pretraining needs it to leave streams unshuffled",
)
def test_mc4_pretraining_then_every_paws_x_transfer_writes_a_record(text_root, tmp_path, data_cache):
    records = run(compose_config(run_overrides("mc4", text_root, tmp_path, data_cache)))
    assert [r["dataset"] for r in records] == PAWS
    for record in records:
        assert record["metric"] == "accuracy" and 0 <= record["value"] <= 100
        assert record["reader_options"] == {"drop_empty": False} and record["pretraining"]["steps"] == 2
