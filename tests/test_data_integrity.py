"""Data faults never give a silent wrong label.

Every reader that reads per-sample files or table rows takes ``on_corrupt``: a corrupt or
truncated file (image, audio, ``.dat``), or a malformed CSV/TSV/json row, either stops the run
with a ``CorruptDataError`` naming the file (and line), or is skipped, counted in one summary
line per split, and left out of the dataset, every other sample keeping its label. Caches
never hold a half-decoded sample as valid and never unpickle objects; archives are extracted
without letting a member escape the target folder; every ``torch.load`` is ``weights_only``.
Each reader kind is exercised on a tiny copy of its real on-disk format (``tests/*_fixtures.py``).
"""

from __future__ import annotations

import ast
import csv
import inspect
import io
import json
import logging
import pickle
import random
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from hydra.utils import get_method
from omegaconf import OmegaConf
from PIL import Image

from dabs_rq.data import array_cache, image_cache, storage
from dabs_rq.data.readers import images, pamap2, speech, text, vqa, xray
from dabs_rq.data.storage import CorruptDataError, CorruptLog, UnsafeArchiveError
from dabs_rq.data.tensor_dataset import cached_tensors
from dabs_rq.paths import DOMAINS_DIR
from tests import dabs_fixtures, speech_fixtures, text_fixtures
from tests import image_fixtures as fx
from tests.tokenizer_fixtures import write_bert_tokenizer

PACKAGE = Path(storage.__file__).resolve().parents[1]  # dabs_rq/


# --------------------------------------------------------------------------- helpers


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut the file to its first ``keep`` fraction (an interrupted download or copy)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def named(path: Path, what: str = "") -> str:
    """A regex for an error message naming ``path`` (and then ``what``)."""
    return re.escape(str(path)) + (".*" + what if what else "")


def summaries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]


def one_summary(caplog, expected_start: str) -> str:
    """The one summary line logged since the last ``caplog.clear()``; it starts with ``expected_start``."""
    lines = summaries(caplog)
    assert len(lines) == 1 and lines[0].startswith(expected_start), lines
    assert "\n" not in lines[0]
    caplog.clear()
    return lines[0]


@pytest.fixture(autouse=True)
def _capture_warnings(caplog):
    caplog.set_level(logging.WARNING)


def colour_codes(dataset) -> list[tuple[int, int]]:
    """(label, instance) coded in the solid colours of the image fixtures, read back from the tensors."""
    (pixels,), _ = dataset[list(range(len(dataset)))]
    centre = pixels[:, :, 56:168, 56:168].mean(dim=(2, 3)) * 255
    return [(fx.decode(r), fx.decode(g)) for r, g in centre[:, :2].tolist()]


# --------------------------------------------------------------------------- the on_corrupt argument


def file_readers() -> dict[str, dict]:
    """``{reader target: its YAML arguments}`` of every domain YAML reading files (not the embedded data)."""
    found = {}
    for path in sorted(DOMAINS_DIR.glob("*.yaml")):
        reader = OmegaConf.to_container(OmegaConf.load(path).reader)
        if reader["_target_"].startswith("dabs_rq.data.readers."):
            found.setdefault(reader.pop("_target_"), reader)
    return found


def test_every_reader_of_the_domain_yamls_takes_on_corrupt_and_checks_its_value(tmp_path):
    readers = file_readers()
    assert len(readers) == 22  # images 7, speech 6, text 4, pamap2, xray 2, vqa 2
    for target, arguments in readers.items():
        reader = get_method(target)
        assert inspect.signature(reader).parameters["on_corrupt"].default == "error", target
        with pytest.raises(ValueError) as err:
            reader(
                split="train", cache_dir=tmp_path / "cache", root=tmp_path / "missing", on_corrupt="ignore", **arguments
            )
        assert str(err.value) == "on_corrupt must be one of error, skip; got 'ignore'", target


def test_corrupt_data_error_and_log_stop_or_count_with_one_summary_line(caplog):
    err = CorruptDataError(Path("/d/a.jpg"), "cannot decode image (OSError: image file is\n truncated)")
    assert isinstance(err, ValueError)
    assert str(err) == "corrupt data: /d/a.jpg: cannot decode image (OSError: image file is truncated)"
    row = CorruptDataError("/d/t.tsv", "label: no label", 7)
    assert str(row) == "corrupt data: /d/t.tsv line 7: label: no label"
    assert str(pickle.loads(pickle.dumps(row))) == str(row)  # goes through loader workers
    assert str(CorruptDataError.from_record(row.to_record())) == str(row)
    with pytest.raises(CorruptDataError, match="/d/a.jpg"):
        CorruptLog("toy", "train").add(err)
    log = CorruptLog("toy", "train", "skip")
    log.add(err)
    log.add(err)  # the same file twice (a clip listed twice) is one corrupt file
    log.add(CorruptDataError("/d/b.jpg", "x"))
    log.report(kept=3)
    assert one_summary(caplog, "skipped 2 corrupt files in toy train, first: /d/a.jpg: cannot decode image")
    with pytest.raises(CorruptDataError, match="nothing is left of toy train after skipping 2 corrupt samples"):
        log.report(kept=0)
    CorruptLog("toy", "test", "skip").report(kept=5)  # nothing skipped: nothing logged
    assert not summaries(caplog)


# --------------------------------------------------------------------------- images


DTD_TRAIN = [(2, 0), (0, 0), (1, 0), (2, 1), (0, 1), (1, 1)]  # (label, instance): train1.txt then val1.txt


def test_corrupt_image_file_stops_the_run_or_is_skipped(tmp_path, caplog):
    fx.write_dtd(tmp_path / "dtd")
    root = tmp_path / "dtd"
    bad = truncate(root / "dtd" / "images" / "banded" / "banded_0001.jpg")  # label 0, instance 0
    with pytest.raises(CorruptDataError, match=named(bad, "cannot decode image .*(?i:truncated)")):
        images.dtd("train", tmp_path / "stop", root, workers=2)
    assert not list((tmp_path / "stop").rglob("*.npy"))  # nothing half-built is kept
    skipped = images.dtd("train", tmp_path / "cache", root, on_corrupt="skip", workers=2)
    assert len(skipped) == 5 and colour_codes(skipped) == [c for c in DTD_TRAIN if c != (0, 0)]
    assert skipped.labels.tolist() == [label for label, k in DTD_TRAIN if (label, k) != (0, 0)]
    one_summary(caplog, f"skipped 1 corrupt files in dtd train, first: {bad}: cannot decode image")
    # the cache remembers the row it holds no image for: a re-run skips it again, or stops
    again = images.dtd("train", tmp_path / "cache", root, on_corrupt="skip", workers=0)
    assert colour_codes(again) == colour_codes(skipped)
    one_summary(caplog, "skipped 1 corrupt files in dtd train")
    with pytest.raises(CorruptDataError, match=named(bad, "recorded when")):
        images.dtd("train", tmp_path / "cache", root)
    assert len(images.dtd("test", tmp_path / "cache", root)) == 3  # the other split is untouched


def test_garbage_and_empty_image_files_are_corrupt_but_a_missing_one_is_missing(tmp_path):
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(300))
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ("noise.png", "empty.jpg"):
        with pytest.raises(CorruptDataError, match=named(tmp_path / name, "cannot decode image")):
            image_cache.open_rgb(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        image_cache.open_rgb(tmp_path / "absent.jpg")


def test_malformed_index_lines_name_file_and_line(tmp_path, caplog):
    fx.write_dtd(tmp_path / "dtd")
    test_list = tmp_path / "dtd" / "dtd" / "labels" / "test1.txt"
    test_list.write_text(test_list.read_text() + "notacategory/notacategory_0001.jpg\n")
    with pytest.raises(CorruptDataError, match=named(test_list) + " line 4: expected '<category>/<image file>'"):
        images.dtd("test", tmp_path / "cache", tmp_path / "dtd")
    skipped = images.dtd("test", tmp_path / "cache", tmp_path / "dtd", on_corrupt="skip")
    assert colour_codes(skipped) == [(2, 2), (0, 2), (1, 2)]
    one_summary(caplog, f"skipped 1 corrupt rows in dtd test, first: {test_list} line 4")

    fx.write_cu_birds(tmp_path / "cub")
    labels_file = tmp_path / "cub" / "CUB_200_2011" / "image_class_labels.txt"
    lines = labels_file.read_text().splitlines()
    lines[4] = "5"  # image 5 (class 2, instance 0: train) lost its class id
    labels_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptDataError, match=named(labels_file) + " line 5: expected '<image id> <class id>'"):
        images.cu_birds("train", tmp_path / "cache", tmp_path / "cub")
    train = images.cu_birds("train", tmp_path / "cache", tmp_path / "cub", on_corrupt="skip")
    assert colour_codes(train) == [(0, 0), (0, 2), (1, 2), (2, 0), (2, 2)]
    assert train.labels.tolist() == [0, 0, 1, 2, 2]
    assert len(images.cu_birds("test", tmp_path / "cache", tmp_path / "cub", on_corrupt="skip")) == 6


def test_on_the_fly_decoding_stops_at_the_corrupt_file_or_skips_it_after_one_scan(tmp_path, caplog):
    fx.write_imagenet(tmp_path / "imagenet")
    root = tmp_path / "imagenet"
    bad = root / "val" / fx.IMAGENET_WNIDS[0] / "ILSVRC2012_val_00000002.JPEG"
    bad.write_bytes(b"\xff\xd8\xff" + bytes(40))  # a JPEG marker, then nothing decodable
    lazy = images.imagenet("test", tmp_path / "cache", root, memmap=False)
    assert len(lazy) == 4 and lazy[0][1] == 0  # stopping needs no scan: the item meeting the file raises
    with pytest.raises(CorruptDataError, match=named(bad)):
        lazy[1]
    skipped = images.imagenet("test", tmp_path / "cache", root, memmap=False, on_corrupt="skip", workers=2)
    assert len(skipped) == 3 and [int(skipped[i][1]) for i in range(3)] == [0, 1, 1]
    (first,) = skipped[0][0]
    assert [fx.decode(v) for v in first[:2, 112, 112].mul(255).tolist()] == [0, 0]  # ILSVRC2012_val_00000001
    assert len(list((tmp_path / "cache").rglob("*.scan.json"))) == 1 and not list((tmp_path / "cache").rglob("*.npy"))
    one_summary(caplog, f"skipped 1 corrupt files in imagenet test, first: {bad}")


def test_truncated_whole_split_files_always_stop_the_run_naming_them(tmp_path):
    fx.write_vgg_flower(tmp_path)
    labels = truncate(tmp_path / "imagelabels.mat", keep=0.7)
    with pytest.raises(CorruptDataError, match=named(labels, "cannot read the labels")):
        images.vgg_flower("train", tmp_path / "cache", tmp_path, on_corrupt="skip")


def test_cifar_batches_are_unpickled_without_arbitrary_objects(tmp_path):
    fx.write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    data, labels = images.load_cifar_batch(batch)
    assert data.shape == (5, 3072) and labels.tolist() == [0, 1, 2, 3, 4]
    truncate(batch)
    with pytest.raises(CorruptDataError, match=named(batch, "not a CIFAR-10 batch")):
        images.cifar10("test", tmp_path / "cache", tmp_path, on_corrupt="skip")  # a whole-split file always stops
    marker = tmp_path / "pwned"
    batch.write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(CorruptDataError, match="refusing to unpickle pathlib"):
        images.load_cifar_batch(batch)
    assert not marker.exists()


# --------------------------------------------------------------------------- speech


AUDIO_MNIST = dict(mean=-31.0, std=13.0)


def test_truncated_audio_file_stops_the_run_or_is_skipped(tmp_path, caplog):
    speech_fixtures.write_audio_mnist(tmp_path)
    root = tmp_path / "audio_mnist"
    clips = sorted((root / "data" / "26").glob("*.wav")) + sorted((root / "data" / "05").glob("*.wav"))
    bad = truncate(clips[1], keep=0.6)  # libsndfile alone would read it as a shorter clip
    with pytest.raises(CorruptDataError, match=named(bad, "truncated WAV: data chunk declares")):
        speech.audio_mnist("test", tmp_path / "cache", root, **AUDIO_MNIST)
    skipped = speech.audio_mnist("test", tmp_path / "cache", root, on_corrupt="skip", **AUDIO_MNIST)
    kept = [str(c) for c in clips if c != bad]
    assert len(skipped) == 5 and skipped.files == kept
    assert skipped.labels.tolist() == [int(Path(f).name.split("_")[0]) for f in kept]
    one_summary(caplog, f"skipped 1 corrupt files in audio_mnist test, first: {bad}: truncated WAV")
    # the kept rows are exactly the spectrograms of those clips: decode them without the bad one
    bad.rename(tmp_path / "aside.wav")
    clean = speech.audio_mnist("test", tmp_path / "clean", root, **AUDIO_MNIST)
    (x_skip,), y_skip = skipped[list(range(5))]
    (x_clean,), y_clean = clean[list(range(5))]
    assert torch.equal(x_skip, x_clean) and torch.equal(y_skip, y_clean)
    assert torch.equal(skipped[3][0][0], x_clean[3]) and int(skipped[3][1]) == int(y_clean[3])


def test_audio_files_are_decoded_completely_or_not_at_all(tmp_path):
    wave = speech_fixtures.write_clip(tmp_path / "a.flac", samples=8000, fmt="FLAC")
    assert np.array_equal(speech.read_audio(tmp_path / "a.flac")[0], wave)
    truncate(tmp_path / "a.flac")
    with pytest.raises(CorruptDataError, match=named(tmp_path / "a.flac", "cannot decode audio")):
        speech.read_audio(tmp_path / "a.flac")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(CorruptDataError, match=named(tmp_path / "empty.wav", "cannot decode audio")):
        speech.read_audio(tmp_path / "empty.wav")
    sf.write(str(tmp_path / "silent.wav"), np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(CorruptDataError, match="no samples"):
        speech.read_audio(tmp_path / "silent.wav")
    sf.write(str(tmp_path / "nan.wav"), np.array([0.0, np.nan, 0.1], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(CorruptDataError, match="non-finite samples"):
        speech.read_audio(tmp_path / "nan.wav")
    with pytest.raises(FileNotFoundError):
        speech.read_audio(tmp_path / "absent.wav")


def test_malformed_split_list_rows_of_speech_sets_name_file_and_line(tmp_path, caplog):
    speech_fixtures.write_fluent(tmp_path)
    root = tmp_path / "fluent_speech"
    listing = root / "fluent_speech_commands_dataset" / "data" / "test_data.csv"
    lines = listing.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]  # line 3 (FLUENT_ROWS[7]) lost its location field
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptDataError, match=named(listing) + " line 3: expected 7 fields"):
        speech.fluent_speech("test", tmp_path / "cache", root, label="action", **AUDIO_MNIST)
    skipped = speech.fluent_speech("test", tmp_path / "cache", root, label="action", on_corrupt="skip", **AUDIO_MNIST)
    actions = speech.FLUENT_LABELS["action"]
    assert skipped.labels.tolist() == [actions.index(speech_fixtures.FLUENT_ROWS[i][2]) for i in (6, 8)]
    one_summary(caplog, f"skipped 1 corrupt rows in fluent_speech_action test, first: {listing} line 3")

    speech_fixtures.write_voxceleb1(tmp_path)
    split_list = tmp_path / "voxceleb1" / "iden_split.txt"
    split_list.write_text(split_list.read_text() + "3\n")
    with pytest.raises(CorruptDataError, match=named(split_list) + " line 13: expected '<1|2|3>"):
        speech.voxceleb1("test", tmp_path / "cache", tmp_path / "voxceleb1", **AUDIO_MNIST)
    assert (
        len(speech.voxceleb1("test", tmp_path / "cache", tmp_path / "voxceleb1", on_corrupt="skip", **AUDIO_MNIST)) == 3
    )


# --------------------------------------------------------------------------- text tables


@pytest.fixture
def glue_root(tmp_path) -> Path:
    write_bert_tokenizer(tmp_path)
    text_fixtures.write_glue_tsv(tmp_path)
    return tmp_path


def glue_rows(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    (ids,), labels = dataset[list(range(len(dataset)))]
    return ids, labels


def test_malformed_tsv_lines_stop_the_run_or_are_skipped(glue_root, tmp_path, caplog):
    dev = glue_root / "glue" / "qnli" / "dev.tsv"
    clean = glue_rows(text.glue("test", tmp_path / "clean", glue_root / "glue", config="qnli"))
    lines = dev.read_text().splitlines()
    lines.insert(3, "9\twhat is on the mat\tthe cat")  # line 4: no label field
    lines.insert(5, "10\twhat is on the mat\tthe cat\tmaybe")  # line 6: not a QNLI label
    dev.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptDataError, match=named(dev) + " line 4: expected 4 tab-separated fields, got 3"):
        text.glue("test", tmp_path / "cache", glue_root / "glue", config="qnli")
    skipped = text.glue("test", tmp_path / "cache", glue_root / "glue", config="qnli", on_corrupt="skip")
    ids, labels = glue_rows(skipped)
    assert torch.equal(ids, clean[0]) and torch.equal(labels, clean[1])  # every other row, with its label
    one_summary(caplog, f"skipped 2 corrupt rows in glue/qnli test, first: {dev} line 4")
    again = text.glue("test", tmp_path / "cache", glue_root / "glue", config="qnli", on_corrupt="skip")
    assert torch.equal(glue_rows(again)[1], clean[1])  # from the cache, still reported
    one_summary(caplog, "skipped 2 corrupt rows in glue/qnli test")
    lines[5] = "10\twhat is on the mat\tthe cat\tentailment"
    lines[3] = "9\twhat is on the mat\tthe cat\t0.5"
    dev.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptDataError, match=named(dev) + " line 4: label: label '0.5' is not one of"):
        text.glue("test", tmp_path / "cache", glue_root / "glue", config="qnli")


def test_malformed_parquet_labels_and_unreadable_shards(tmp_path, caplog):
    write_bert_tokenizer(tmp_path)
    folder = tmp_path / "glue" / "sst2"
    frame = text_fixtures.glue_frame("sst2", 6, 100)  # row 1 has an empty sentence (dropped, as DABS)
    text_fixtures.write_parquet(frame, folder, "train")
    frame = frame.astype({"label": "Int64"})
    frame.loc[3, "label"] = pd.NA
    text_fixtures.write_parquet(frame, folder, "validation")
    shard = folder / "validation-00000-of-00001.parquet"
    with pytest.raises(CorruptDataError, match=named(shard) + " row 4: label: no label"):
        text.glue("test", tmp_path / "cache", tmp_path / "glue", config="sst2")
    skipped = text.glue("test", tmp_path / "cache", tmp_path / "glue", config="sst2", on_corrupt="skip")
    assert skipped.labels.tolist() == [frame.label[i] for i in (0, 2, 4, 5)]
    one_summary(caplog, f"skipped 1 corrupt rows in glue/sst2 test, first: {shard} row 4")
    truncate(folder / "train-00000-of-00001.parquet")
    with pytest.raises(CorruptDataError, match=named(folder / "train-00000-of-00001.parquet", "cannot be read")):
        text.glue("train", tmp_path / "cache", tmp_path / "glue", config="sst2", on_corrupt="skip")


# --------------------------------------------------------------------------- PAMAP2 sensor rows


@pytest.fixture(scope="module")
def pamap2_recording(tmp_path_factory) -> bytes:
    root = tmp_path_factory.mktemp("pamap2")
    dabs_fixtures.write_pamap2(root)
    return (root / "pamap2" / "PAMAP2_Dataset" / "Protocol" / "subject105.dat").read_bytes()


def test_malformed_or_truncated_dat_rows_stop_the_run_or_are_skipped(pamap2_recording, tmp_path, caplog):
    root = tmp_path / "pamap2"
    path = root / "PAMAP2_Dataset" / "Protocol" / "subject105.dat"
    path.parent.mkdir(parents=True)
    lines = pamap2_recording.split(b"\n")
    lines[99] = b" ".join(lines[99].split()[:50])  # line 100 (activity 1) lost 4 fields: pandas would pad NaN
    fields = lines[199].split()
    fields[3] = b"1.2.3"  # line 200: the hand temperature is not a number
    lines[199] = b" ".join(fields)
    body = b"\n".join(lines).rstrip(b"\n")
    path.write_bytes(body[: len(body) - 30])  # and the file was cut inside its last line
    kwargs = dict(train_subjects=(105,), test_subjects=(105,), windows="grid", grid_stride=40)
    with pytest.raises(CorruptDataError, match=named(path) + " line 100: expected 54 numbers, got 50 fields"):
        pamap2.pamap2("test", tmp_path / "cache", root, **kwargs)
    dataset = pamap2.pamap2("test", tmp_path / "cache", root, on_corrupt="skip", **kwargs)
    one_summary(caplog, f"skipped 3 corrupt rows in pamap2 test, first: {path} line 100: expected 54 numbers")
    (windows,), labels = dataset[list(range(len(dataset)))]
    hand_temperature = windows[:, :, 1]  # the fixture writes the activity id there
    activity = torch.tensor(pamap2.ACTIVITIES)[labels]
    assert torch.equal(hand_temperature, activity[:, None].expand_as(hand_temperature).float())
    assert int(dataset.rows.shape[0]) == 11 * 340 - 2  # two rows of activities dropped, none invented
    pamap2.pamap2("test", tmp_path / "cache", root, on_corrupt="skip", **kwargs)  # cached: reported again
    one_summary(caplog, "skipped 3 corrupt rows in pamap2 test")


# --------------------------------------------------------------------------- chest X-rays


def test_chexpert_csv_rows_and_images_stop_the_run_or_are_skipped(tmp_path, caplog):
    dabs_fixtures.write_chexpert(tmp_path)
    base = tmp_path / "chexpert"
    table_path = base / "CheXpert-v1.0-small" / "valid.csv"
    original = pd.read_csv(table_path)
    with open(table_path, newline="") as f:
        rows = list(csv.reader(f))
    rows[3][rows[0].index("Edema")] = "maybe"  # line 4
    bad_image = truncate(base / rows[5][0])  # line 6
    with open(table_path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    table_path.write_bytes(table_path.read_bytes().rstrip(b"\r\n")[:-25])  # the last line is cut short
    with pytest.raises(CorruptDataError, match=named(table_path) + " line 4: Edema is 'maybe'"):
        xray.chexpert("test", tmp_path / "cache", base)
    dataset = xray.chexpert("test", tmp_path / "cache", base, on_corrupt="skip", decode_workers=2)
    kept = [0, 1, 3, 5, 6]  # table rows (line - 2)
    expected = (original.loc[kept, list(xray.CHEXPERT_TASKS)] == 1.0).to_numpy(np.int64)
    assert len(dataset) == 5 and torch.equal(dataset.labels, torch.tensor(expected))
    (pixels,), _ = dataset[[2]]
    reference = np.asarray(Image.open(base / original.Path[3]).convert("L").resize((224, 224), Image.BILINEAR))
    assert torch.equal(pixels[0, 0], torch.from_numpy(reference.astype(np.float32) / 255))
    line = one_summary(caplog, "skipped 3 corrupt files/rows in chexpert test, first: ")
    assert str(table_path) in line
    rows[3][rows[0].index("Edema")] = "1.0"
    with open(table_path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(CorruptDataError, match=named(bad_image, "cannot decode image")):
        xray.chexpert("test", tmp_path / "cache", base)


def test_xray8_corrupt_png_and_metadata_line(tmp_path, caplog):
    dabs_fixtures.write_xray8(tmp_path)
    root = tmp_path / "xray8"
    test_names = xray.xray8_split(sorted(p.name for p in (root / "images").glob("*.png")), "test")
    bad = truncate(root / "images" / test_names[0])
    metadata = root / "metadata.csv"
    lines = metadata.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(test_names[1]))
    lines[row] = lines[row].split(",", 3)[0] + ",Mass"  # that image's metadata line lost its other fields
    metadata.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptDataError, match=named(metadata) + f" line {row + 1}: expected 11 fields, got 2"):
        xray.chestxray8("test", tmp_path / "cache", root)
    dataset = xray.chestxray8("test", tmp_path / "cache", root, on_corrupt="skip")
    findings = pd.read_csv(metadata, usecols=[0, 1], on_bad_lines="skip").set_index("Image Index")["Finding Labels"]
    expected = [[int(p in findings[n]) for p in xray.XRAY8_PATHOLOGIES] for n in test_names[2:]]
    assert dataset.labels.tolist() == expected
    one_summary(caplog, "skipped 2 corrupt files/rows in xray8 test")
    assert bad.exists()


# --------------------------------------------------------------------------- VQA json


def test_vqa_corrupt_image_and_malformed_json_entry(tmp_path, caplog):
    dabs_fixtures.write_vqa(tmp_path)
    write_bert_tokenizer(tmp_path)
    root = tmp_path / "vqa"
    annotations_path = root / "mscoco_val2014_annotations.json"
    annotations = json.loads(annotations_path.read_text())
    del annotations["annotations"][3]["multiple_choice_answer"]  # entry 4: image 2's first question
    annotations_path.write_text(json.dumps(annotations))
    images_json = json.loads((root / "annotations" / "captions_val2014.json").read_text())["images"]
    bad = truncate(root / "val2014" / images_json[0]["file_name"])
    with pytest.raises(
        CorruptDataError, match=named(annotations_path) + " entry 4: annotation has no multiple_choice_answer"
    ):
        vqa.vqa("test", tmp_path / "cache", root)
    dataset = vqa.vqa("test", tmp_path / "cache", root, on_corrupt="skip", decode_workers=2)
    questions = vqa.vqa_questions(root, "val2014", CorruptLog("vqa", "test", "skip"))
    _, labels = vqa.draw_answers(questions, random.Random("0:test"))
    expected = [y for q, y in zip(questions, labels) if q["image_id"] != images_json[0]["id"]]
    assert len(dataset) == 8 - 2 - 1 and dataset.labels.tolist() == expected
    one_summary(caplog, "skipped 2 corrupt files/rows in vqa test, first: ")
    with pytest.raises(CorruptDataError, match=named(annotations_path, "entry 4")):
        vqa.vqa("test", tmp_path / "cache", root)  # the default still stops (its own cache)
    (root / "MultipleChoice_mscoco_val2014_questions.json").write_text('{"questions": [')
    with pytest.raises(CorruptDataError, match="MultipleChoice_mscoco_val2014_questions.json: not valid json"):
        vqa.vqa("test", tmp_path / "other", root, on_corrupt="skip")
    assert bad.exists()


# --------------------------------------------------------------------------- caches


class Exploit:
    """Unpickling it would create ``marker`` (any arbitrary call would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_partly_built_cache_is_never_kept_and_skipped_rows_are_recorded(tmp_path):
    def fill(i: int) -> np.ndarray:
        if i == 2:
            raise CorruptDataError(f"/data/{i}.jpg", "cannot decode image")
        return np.full(3, i + 1, dtype=np.float32)

    path = tmp_path / "c.npy"
    with pytest.raises(CorruptDataError, match="/data/2.jpg"):
        array_cache.memmap_cache(path, 5, (3,), np.float32, fill)
    assert not list(tmp_path.iterdir())  # neither the cache nor a temporary file
    array, bad = array_cache.checked_memmap_cache(path, 5, (3,), np.float32, fill, skip_corrupt=True)
    assert list(bad) == [2] and array[:, 0].tolist() == [1, 2, 0, 4, 5]
    assert array_cache.corrupt_record_path(path).exists()
    assert list(array_cache.checked_memmap_cache(path, 5, (3,), np.float32, None, skip_corrupt=True)[1]) == [2]
    with pytest.raises(CorruptDataError, match="/data/2.jpg: cannot decode image"):
        array_cache.memmap_cache(path, 5, (3,), np.float32, None)  # a zero row is never served as a sample
    with image_cache.ParallelRows(fill, 5, workers=2, chunk=4) as rows:  # one bad row does not sink its chunk
        assert rows(1)[0] == 2 and rows(3)[0] == 4
        with pytest.raises(CorruptDataError):
            rows(2)


def test_cache_files_holding_pickled_objects_are_refused_never_unpickled(tmp_path, caplog):
    marker = tmp_path / "pwned"
    path = tmp_path / "images.npy"
    np.save(path, np.array([Exploit(marker)], dtype=object), allow_pickle=True)
    assert array_cache.load_array(path) is None and array_cache.load_array(path, mmap=False) is None
    rebuilt = array_cache.memmap_cache(path, 2, (2,), np.float32, lambda i: np.full(2, i))
    assert rebuilt.tolist() == [[0, 0], [1, 1]] and not marker.exists()
    assert any("ignoring unusable cache file" in r.getMessage() for r in caplog.records)
    truncate(path)  # a damaged cache is rebuilt too
    assert array_cache.memmap_cache(path, 2, (2,), np.float32, lambda i: np.full(2, 7)).tolist() == [[7, 7]] * 2

    tensors = tmp_path / "text.pt"
    torch.save({"tokens": torch.zeros(2), "evil": Exploit(marker)}, tensors)
    with pytest.raises(pickle.UnpicklingError):
        cached_tensors(tensors, lambda: {"tokens": torch.ones(2)})
    assert not marker.exists()


def test_every_torch_load_in_the_package_is_weights_only():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                safe = any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                )
                found.append((f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", safe))
    assert found, "expected torch.load calls to check"
    assert [where for where, safe in found if not safe] == []


# --------------------------------------------------------------------------- archives


def _tar(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_tar_members_leaving_the_target_folder_are_refused(tmp_path):
    good = (_info("data/ok.txt"), b"fine")
    _tar(tmp_path / "good.tar.gz", good, (_info("data/link", tarfile.SYMTYPE, "ok.txt"), b""))
    storage.extract_archive(tmp_path / "good.tar.gz", tmp_path / "out")
    assert (tmp_path / "out" / "data" / "ok.txt").read_text() == "fine"
    assert (tmp_path / "out" / "data" / "link").read_text() == "fine"
    evil = {
        "dotdot": (_info("data/../../evil.txt"), b"x"),
        "absolute": (_info("/tmp/evil-absolute.txt"), b"x"),
        "symlink out": (_info("data/escape", tarfile.SYMTYPE, "../../.."), b""),
        "absolute symlink": (_info("data/passwd", tarfile.SYMTYPE, "/etc/passwd"), b""),
        "hard link out": (_info("data/hard", tarfile.LNKTYPE, "../../outside.txt"), b""),
        "device": (_info("data/dev", tarfile.CHRTYPE), b""),
    }
    for name, member in evil.items():
        archive = _tar(tmp_path / f"{name}.tar.gz", good, member)
        target = tmp_path / name / "inner"
        with pytest.raises(UnsafeArchiveError, match=f"refusing to extract {re.escape(str(archive))}"):
            storage.extract_archive(archive, target)
        assert not (target / "data").exists(), name  # refused before anything was written
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil-absolute.txt").exists()


def test_zip_members_with_dotdot_or_absolute_paths_are_refused(tmp_path):
    for name in ("../evil.txt", "data/../../evil.txt", "/abs/evil.txt", "..\\evil.txt", "C:\\evil.txt", "C:/evil.txt"):
        archive = tmp_path / "evil.zip"
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("data/ok.txt", "fine")
            z.writestr(zipfile.ZipInfo(name), "x")
        with pytest.raises(UnsafeArchiveError, match=re.escape(repr(name))):
            storage.extract_archive(archive, tmp_path / "out" / "inner")
        assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists(), name
    with zipfile.ZipFile(tmp_path / "good.zip", "w") as z:
        z.writestr("data/ok.txt", "fine")
    storage.extract_archive(tmp_path / "good.zip", tmp_path / "out", remove_finished=True)
    assert (tmp_path / "out" / "data" / "ok.txt").read_text() == "fine" and not (tmp_path / "good.zip").exists()
    (tmp_path / "cut.zip").write_bytes(b"PK\x03\x04" + bytes(10))
    with pytest.raises(CorruptDataError, match=named(tmp_path / "cut.zip")):
        storage.extract_archive(tmp_path / "cut.zip", tmp_path / "out")


def test_downloads_are_extracted_only_by_the_safe_helper(tmp_path):
    """No unfiltered extractor is reachable: torchvision's and torchaudio's extract with no tar filter."""
    unsafe = {"download_and_extract_archive", "extract_archive", "_extract_tar", "_extract_zip", "extractall"}
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("torchvision", "torchaudio")):
                problems += [where for alias in node.names if alias.name in unsafe]
            if isinstance(node, ast.Call) and path.name != "storage.py":
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in unsafe - {"extract_archive"}:
                    problems.append(where)
                dataset_class = (
                    isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Attribute)
                    and node.func.value.attr == "datasets"
                )
                if dataset_class and not any(
                    k.arg == "download" and isinstance(k.value, ast.Constant) and k.value.value is False
                    for k in node.keywords
                ):
                    problems.append(f"{where} (a torchaudio/torchvision dataset that may download and extract)")
    assert problems == []
    # and the helper extracts a served archive end to end
    served = tmp_path / "served"
    served.mkdir()
    _tar(served / "set.tgz", (_info("set/a.txt"), b"a"))
    with dabs_fixtures.serve_folder(served) as url:
        storage.download_and_extract(f"{url}/set.tgz", tmp_path / "root", remove_finished=True)
    assert (tmp_path / "root" / "set" / "a.txt").read_text() == "a" and not (tmp_path / "root" / "set.tgz").exists()
