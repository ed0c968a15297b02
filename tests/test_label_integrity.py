"""Never a wrong or silently missing label (issue 14).

An example the labels do not cover (a file not in ``labels_csv``, an empty label cell, an image or
clip outside the class folders), a recording shorter than ``window``, a row in no split, a row a
DABS quirk drops: each either stops the run in one line that names the count, the first few and
the YAML key that fixes it, or is left out under an explicit policy, logged in one line and
counted in the split Dataset's ``excluded`` (``{reason: count}``, which the runner records).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from dabs_rq.data import domains
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.data.generic.audio import audio_files
from dabs_rq.data.generic.image_text import image_text_pairs
from dabs_rq.data.generic.images import image_folder, image_table
from dabs_rq.data.generic.sensor import sensor_arrays
from dabs_rq.data.generic.spec import ReaderSpecError
from dabs_rq.data.generic.text import text_table
from dabs_rq.data.storage import CorruptDataError, LeftOut, UnusableExamplesError
from dabs_rq.errors import UserError
from tests.generic_helpers import record, run_public_command, write_domain

WINDOW = 40
INPUTS = [{"_target_": "dabs_rq.encoder.SegmentEmbedding1d", "seq_len": WINDOW, "segment_size": 4, "channels": 3}]
CLASSES = ("walk", "run", "sit")


# --------------------------------------------------------------------------- sensor data


def _recordings(folder, per_class=4, unlisted=(), empty=(), short=(), split_of=None):
    """``recordings/<class>_<k>.npy`` (200 x 3; ``short`` ones 10 steps) and ``labels.csv``
    (file, activity, part): files in ``unlisted`` have no row, those in ``empty`` an empty label."""
    (folder / "recordings").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["file,activity,part"]
    for c, name in enumerate(CLASSES):
        for k in range(per_class):
            file = f"{name}_{k}.npy"
            length = 10 if file in short else 200
            t = np.arange(length)[:, None]
            signal = np.sin(t * (0.05 + 0.1 * c) + rng.uniform(0, 6, size=3)) + 0.1 * rng.normal(size=(length, 3))
            np.save(folder / "recordings" / file, signal.astype(np.float32))
            if file not in unlisted:
                part = (split_of or {}).get(file, "test" if k == 0 else "train")
                rows.append(f"{file},{'' if file in empty else name},{part}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def _sensor(folder, **changes) -> dict:
    return {
        "path": str(folder / "recordings"),
        "labels_csv": str(folder / "labels.csv"),
        "label_column": "activity",
        "window": WINDOW,
        "stride": 20,
        "split_seed": 1,
        "test_fraction": 0.25,
        **changes,
    }


def _both(reader, cache, **settings):
    return {split: reader(split, cache, **settings) for split in ("train", "test")}


def _recording_split(folder, settings, cache):
    """``{split: set of recordings}`` of a sensor reader, read from the windows' first values."""
    firsts = {f.name: np.load(f)[:WINDOW] for f in sorted((folder / "recordings").iterdir())}
    out = {}
    for split in ("train", "test"):
        data = sensor_arrays(split, cache, **{**settings, "normalize": False})
        (x,), _ = data[list(range(len(data)))]
        out[split] = {
            name
            for name, w in firsts.items()
            if len(w) == WINDOW
            if any(torch.allclose(torch.from_numpy(w), row) for row in x)
        }
    return out


def test_a_recording_missing_from_labels_csv_is_a_one_line_error_naming_files_count_and_key(tmp_path):
    _recordings(tmp_path, unlisted=("run_2.npy", "sit_3.npy"))
    with pytest.raises(UnusableExamplesError) as err:
        sensor_arrays("train", tmp_path / "cache", **_sensor(tmp_path))
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    assert message.startswith("reader.unlabelled: 2 recordings are not in labels_csv"), message
    assert "run_2.npy, sit_3.npy" in message and "set reader.unlabelled: skip" in message


def test_unlabelled_recordings_skipped_are_counted_and_never_become_a_class(tmp_path, caplog):
    _recordings(tmp_path, unlisted=("run_2.npy", "sit_3.npy"))
    caplog.set_level(logging.WARNING)
    settings = _sensor(tmp_path, unlabelled="skip")
    split = _both(sensor_arrays, tmp_path / "cache", **settings)
    counts = [split[s].excluded.get("recordings not in labels_csv", 0) for s in ("train", "test")]
    assert sum(counts) == 2 and all(isinstance(v, int) for s in split.values() for v in s.excluded.values())
    assert len(split["train"]) + len(split["test"]) == 10 * 9  # 12 recordings, 2 unlabelled, 9 windows each
    labels = torch.cat([split["train"].labels, split["test"].labels])
    assert sorted(set(labels.tolist())) == [0, 1, 2]  # run, sit, walk: no "None" class
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("left out of recordings")]
    assert len(lines) == sum(c > 0 for c in counts) and all("recordings not in labels_csv" in line for line in lines)
    # cached: the same counts and the same line again
    again = sensor_arrays("train", tmp_path / "cache", **settings)
    assert again.excluded == split["train"].excluded


def test_leaving_unlabelled_recordings_out_keeps_the_split_of_the_pretraining_yaml(tmp_path):
    """Splits are drawn over every recording: a transfer test recording is never a pretraining train one."""
    _recordings(tmp_path, unlisted=("walk_1.npy", "run_2.npy", "sit_3.npy"))
    pretraining = _recording_split(tmp_path, _sensor(tmp_path, label_type="none"), tmp_path / "c1")
    transfer = _recording_split(tmp_path, _sensor(tmp_path, unlabelled="skip"), tmp_path / "c2")
    unlisted = {"walk_1.npy", "run_2.npy", "sit_3.npy"}
    assert transfer == {s: names - unlisted for s, names in pretraining.items()}


def test_split_by_column_with_an_unlisted_recording_errors_or_counts_it_in_no_split(tmp_path):
    _recordings(tmp_path, unlisted=("sit_3.npy",))
    settings = _sensor(tmp_path, split_by="column", split_column="part")
    with pytest.raises(
        UnusableExamplesError,
        match=r"^reader\.unlabelled: 1 recordings are not in labels_csv .*"
        r"\(sit_3\.npy\)",
    ):
        sensor_arrays("test", tmp_path / "cache", **settings)
    split = _both(sensor_arrays, tmp_path / "cache", **{**settings, "unlabelled": "skip"})
    for part in split.values():
        assert part.excluded == {"recordings not in labels_csv (so in no split)": 1}
    assert len(split["train"]) == 8 * 9 and len(split["test"]) == 3 * 9


def test_an_empty_label_cell_is_an_error_never_a_class_named_empty(tmp_path):
    _recordings(tmp_path, empty=("walk_2.npy",))
    with pytest.raises(
        UnusableExamplesError,
        match=r"reader\.unlabelled: 1 recordings have an empty activity cell"
        r".*\(walk_2\.npy\)",
    ):
        sensor_arrays("train", tmp_path / "cache", **_sensor(tmp_path))
    split = _both(sensor_arrays, tmp_path / "cache", **_sensor(tmp_path, unlabelled="skip"))
    assert sum(s.excluded.get("recordings with an empty label in labels_csv", 0) for s in split.values()) == 1
    assert sorted(set(torch.cat([s.labels for s in split.values()]).tolist())) == [0, 1, 2]


def test_recordings_shorter_than_the_window_stop_the_run_or_are_skipped_and_counted(tmp_path, caplog):
    short = ("walk_1.npy", "run_1.npy", "sit_2.npy")
    _recordings(tmp_path, short=short)
    with pytest.raises(UnusableExamplesError) as err:
        sensor_arrays("train", tmp_path / "cache", **_sensor(tmp_path))
    assert str(err.value).startswith(f"reader.short: 3 recordings are shorter than window={WINDOW} steps (")
    assert "lower reader.window, or set reader.short: skip" in str(err.value)
    caplog.set_level(logging.WARNING)
    split = _both(sensor_arrays, tmp_path / "cache", **_sensor(tmp_path, short="skip"))
    assert sum(s.excluded.get("recordings shorter than window", 0) for s in split.values()) == 3
    assert len(split["train"]) + len(split["test"]) == 9 * 9
    assert any("recordings shorter than window" in r.getMessage() for r in caplog.records)


def test_a_file_listed_twice_with_different_labels_or_two_recordings_of_one_name_are_errors(tmp_path):
    _recordings(tmp_path)
    with (tmp_path / "labels.csv").open("a") as f:
        f.write("walk_0.npy,run,train\n")
    with pytest.raises(ReaderSpecError, match=r"reader\.labels_csv: .* lists walk_0\.npy twice with different"):
        sensor_arrays("train", tmp_path / "c1", **_sensor(tmp_path))
    other = tmp_path / "other"
    _recordings(other)
    (other / "recordings" / "more").mkdir()
    np.save(other / "recordings" / "more" / "walk_0.npy", np.zeros((200, 3), dtype=np.float32))
    with pytest.raises(ReaderSpecError, match=r"reader\.labels_csv: matches recordings by file name.*walk_0\.npy"):
        sensor_arrays("train", tmp_path / "c2", **_sensor(other, pattern="**/*.npy"))


def test_array_recordings_without_labels_csv_never_get_a_made_up_label(tmp_path):
    _recordings(tmp_path)
    settings = {k: v for k, v in _sensor(tmp_path).items() if k != "labels_csv"}
    with pytest.raises(
        UnusableExamplesError,
        match=r"reader\.unlabelled: 12 array recordings have no activity "
        r"column .*set reader\.labels_csv",
    ):
        sensor_arrays("train", tmp_path / "cache", **settings)


def test_csv_recordings_windows_with_an_empty_row_label_are_named_or_counted(tmp_path):
    (tmp_path / "rec").mkdir()
    for k in range(8):
        rows = ["ax,ay,az,state"] + [
            f"{np.sin(i / 5):.3f},{np.cos(i / 5):.3f},{k},{'' if k == 2 else 'up'}" for i in range(100)
        ]
        (tmp_path / "rec" / f"r{k}.csv").write_text("\n".join(rows) + "\n")
    settings = {"path": str(tmp_path / "rec"), "label_column": "state", "window": WINDOW, "test_fraction": 0.25}
    with pytest.raises(
        UnusableExamplesError,
        match=r"reader\.unlabelled: 1 recordings hold windows whose state is "
        r"empty \(r2\.csv\)",
    ):
        sensor_arrays("train", tmp_path / "c1", **settings)
    split = _both(sensor_arrays, tmp_path / "c2", **settings, unlabelled="skip")
    assert sum(s.excluded.get("windows with an empty label", 0) for s in split.values()) == 2  # 100 // 40
    assert len(split["train"]) + len(split["test"]) == 7 * 2


def test_a_malformed_score_or_class_outside_classes_is_a_one_line_reader_error(tmp_path):
    _recordings(tmp_path)
    table = (tmp_path / "labels.csv").read_text().replace("walk_1.npy,walk", "walk_1.npy,fast")
    (tmp_path / "labels.csv").write_text(table)
    with pytest.raises(ReaderSpecError, match=r"reader\.classes: .*label 'fast' is not one of reader\.classes"):
        sensor_arrays("train", tmp_path / "c1", **_sensor(tmp_path, classes=list(CLASSES)))
    scores = table
    for k, name in enumerate(CLASSES):
        scores = scores.replace(f",{name},", f",{k + 0.5},")
    (tmp_path / "labels.csv").write_text(scores)
    with pytest.raises(ReaderSpecError, match=r"reader\.label_column: .*row \d+: label 'fast' is not a number"):
        sensor_arrays("train", tmp_path / "c2", **_sensor(tmp_path, label_type="score"))


def test_a_skipped_corrupt_recording_keeps_the_other_recordings_split_and_is_counted(tmp_path):
    _recordings(tmp_path)
    clean = _recording_split(tmp_path, _sensor(tmp_path), tmp_path / "c1")
    bad = tmp_path / "recordings" / "run_1.npy"
    bad.write_bytes(bad.read_bytes()[:60])
    settings = {**_sensor(tmp_path), "normalize": False}
    skipping = {s: sensor_arrays(s, tmp_path / "c2", on_corrupt="skip", **settings) for s in ("train", "test")}
    assert sum(s.excluded.get("files corrupt (on_corrupt=skip)", 0) for s in skipping.values()) == 1
    firsts = {f.name: np.load(f)[:WINDOW] for f in sorted((tmp_path / "recordings").iterdir()) if f != bad}
    for split, data in skipping.items():
        (x,), _ = data[list(range(len(data)))]
        held = {n for n, w in firsts.items() if any(torch.allclose(torch.from_numpy(w), row) for row in x)}
        assert held == clean[split] - {"run_1.npy"}


# --------------------------------------------------------------------------- through the public command


def _domain(folder, shared=None, **reader_changes):
    reader = {
        "_target_": "dabs_rq.data.generic.sensor.sensor_arrays",
        "path": "recordings",
        "labels_csv": "labels.csv",
        "window": WINDOW,
        "stride": 20,
        "split_seed": 1,
        "test_fraction": 0.25,
        **(shared or {}),
    }
    write_domain(
        folder,
        "imu",
        display_name="IMU",
        domain="My sensors",
        role="pretrain",
        inputs=INPUTS,
        reader={**reader, "label_type": "none"},
        batch_size=8,
        transfer=["imu_activity"],
    )
    write_domain(
        folder,
        "imu_activity",
        display_name="IMU activity",
        domain="My sensors",
        role="transfer",
        inputs=INPUTS,
        reader={**reader, "label_column": "activity", **reader_changes},
        batch_size=8,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
    )


@pytest.mark.integration
@pytest.mark.parametrize("changes", [{}, {"split_by": "column", "split_column": "part"}])
def test_the_command_stops_with_exit_2_and_one_line_for_unlabelled_recordings(tmp_path, data_cache, changes):
    mine = tmp_path / "mine"
    _recordings(mine, unlisted=("sit_3.npy", "walk_2.npy"))
    _domain(mine, **changes)
    done = run_public_command("imu", mine, tmp_path, data_cache)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().startswith("dabs-rq: error: reader.unlabelled: 2 recordings are not in labels_csv ")
    assert "sit_3.npy, walk_2.npy" in done.stderr and "set reader.unlabelled: skip" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    "made, expected",
    [
        ({"empty": ("walk_2.npy",)}, "reader.unlabelled: 1 recordings have an empty activity cell"),
        ({"short": ("run_1.npy",)}, f"reader.short: 1 recordings are shorter than window={WINDOW} steps"),
    ],
)
def test_the_command_stops_with_exit_2_for_an_empty_label_cell_or_a_short_recording(
    tmp_path, data_cache, made, expected
):
    mine = tmp_path / "mine"
    _recordings(mine, **made)
    _domain(mine)
    done = run_public_command("imu", mine, tmp_path, data_cache)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().startswith(f"dabs-rq: error: {expected}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("*.json"))


@pytest.mark.integration
def test_the_command_runs_with_the_skip_policies_and_says_what_it_left_out(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _recordings(mine, unlisted=("sit_3.npy",), short=("run_1.npy",))
    _domain(mine, {"short": "skip"}, unlabelled="skip")  # the pretraining YAML reads the short recording too
    done = run_public_command("imu", mine, tmp_path, data_cache)
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert "left out of recordings" in said and "1 recordings not in labels_csv (sit_3.npy)" in said
    assert "recordings shorter than window (run_1.npy)" in said
    # ... and the record says how many examples each split left out, and why (pretraining's too)
    stored = record(tmp_path, "imu_activity")
    excluded = stored["protocol"]["excluded"]
    assert set(excluded) == {"train", "test"}
    assert sum(split.get("recordings shorter than window", 0) for split in excluded.values()) == 1
    assert any("not in labels_csv" in reason for split in excluded.values() for reason in split)
    assert stored["pretraining"]["excluded"].get("recordings shorter than window") == 1


# --------------------------------------------------------------------------- images, audio, text


def _png(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(path)


def test_an_image_outside_the_class_folders_errors_or_is_counted_and_the_split_matches_unlabelled(tmp_path):
    root = tmp_path / "photos"
    for c in ("cat", "dog"):
        for k in range(5):
            _png(root / c / f"{k}.png", 20 * k + (100 if c == "dog" else 0))
    _png(root / "stray.png")
    _png(root / "zz_stray.png", 7)
    settings = {"root": str(root), "image_size": [8, 8], "test_fraction": 0.25}
    with pytest.raises(
        UnusableExamplesError,
        match=r"reader\.unlabelled: 2 images lie outside the class subfolders "
        r".*\(stray\.png, zz_stray\.png\).*move them into a class",
    ):
        image_folder("train", tmp_path / "c1", **settings)
    labelled = _both(image_folder, tmp_path / "c2", **settings, unlabelled="skip")
    assert sum(s.excluded.get("images outside the class subfolders", 0) for s in labelled.values()) == 2
    assert len(labelled["train"]) + len(labelled["test"]) == 10
    unlabelled = _both(image_folder, tmp_path / "c3", **settings, label_type="none")
    for split in ("train", "test"):  # the same images on each side, less the two strays
        kept = labelled[split][list(range(len(labelled[split])))][0][0]
        every = unlabelled[split][list(range(len(unlabelled[split])))][0][0]
        assert len(every) - len(kept) == labelled[split].excluded.get("images outside the class subfolders", 0)
        assert all(any(torch.equal(k, e) for e in every) for k in kept)


def _table_images(tmp_path, cells):
    rows = ["path,colour,part"]
    for k, (colour, part) in enumerate(cells):
        _png(tmp_path / "images" / f"{k}.png", 10 * k)
        rows.append(f"images/{k}.png,{colour},{part}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    return {
        "table": str(tmp_path / "t.csv"),
        "label_column": "colour",
        "image_size": [8, 8],
        "split_by": "column",
        "split_column": "part",
    }


def test_image_table_rows_with_an_empty_label_or_no_split_are_named_or_counted(tmp_path):
    cells = [
        ("red", "train"),
        ("blue", "train"),
        ("", "train"),
        ("red", "test"),
        ("blue", "test"),
        ("red", "valid"),
        ("blue", "train"),
    ]
    settings = _table_images(tmp_path, cells)
    with pytest.raises(
        UnusableExamplesError,
        match=r"reader\.unlabelled: 1 rows of .*t\.csv have an empty colour "
        r"cell \(t\.csv line 4\)",
    ):
        image_table("train", tmp_path / "c1", **settings)
    split = _both(image_table, tmp_path / "c2", **settings, unlabelled="skip")
    neither = "rows in neither split (part is neither 'train' nor 'test')"
    assert split["train"].excluded == {"rows with an empty label": 1, neither: 1}
    assert split["test"].excluded == {neither: 1}
    assert split["train"].labels.tolist() == [1, 0, 0] and split["test"].labels.tolist() == [1, 0]  # blue=0, red=1


def test_image_table_label_columns_must_hold_0_or_1(tmp_path):
    rows = ["path,warm,cold"] + [f"images/{k}.png,{k % 2},{2 if k == 3 else 1 - k % 2}" for k in range(6)]
    for k in range(6):
        _png(tmp_path / "images" / f"{k}.png", 10 * k)
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ReaderSpecError, match=r"reader\.label_columns: .*row 4: label column 'cold' holds '2', not 0"):
        image_table(
            "train",
            tmp_path / "c",
            table=str(tmp_path / "t.csv"),
            label_type="multilabel",
            label_columns=["warm", "cold"],
            image_size=[8, 8],
        )


def test_image_text_rows_with_an_empty_text_are_corrupt_rows(tmp_path):
    rows = []
    for k in range(5):
        _png(tmp_path / "pics" / f"{k}.png", 30 * k)
        rows.append({"image": f"pics/{k}.png", "text": "" if k == 2 else f"picture {k}", "fold": "train"})
    rows.append({"image": "pics/0.png", "text": "again", "fold": "test"})
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {
        "table": str(tmp_path / "pairs.jsonl"),
        "label_type": "none",
        "image_size": [8, 8],
        "seq_len": 8,
        "vocab_size": 50,
        "split_by": "column",
        "split_column": "fold",
    }
    with pytest.raises(CorruptDataError, match=r"pairs\.jsonl line 3: empty or missing text in column 'text'"):
        image_text_pairs("train", tmp_path / "c1", **settings)
    train = image_text_pairs("train", tmp_path / "c2", on_corrupt="skip", **settings)
    assert len(train) == 4 and train.excluded == {"rows corrupt (on_corrupt=skip)": 1}


def _wav(path, seconds=0.2):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(np.arange(int(16000 * seconds)) / 3)).astype(np.float32), 16000)


def test_a_clip_outside_the_class_folders_or_with_an_empty_label_cell_errors_or_is_counted(tmp_path):
    for c in ("low", "high"):
        for k in range(4):
            _wav(tmp_path / "clips" / c / f"{k}.wav")
    _wav(tmp_path / "clips" / "loose.wav")
    settings = {
        "audio_root": str(tmp_path / "clips"),
        "clip_seconds": 0.2,
        "mean": -30.0,
        "std": 20.0,
        "test_fraction": 0.25,
    }
    with pytest.raises(
        UnusableExamplesError,
        match=r"reader\.unlabelled: 1 clips lie outside the class subfolders "
        r"of .*\(loose\.wav\)",
    ):
        audio_files("train", tmp_path / "c1", **settings)
    split = _both(audio_files, tmp_path / "c2", **settings, unlabelled="skip")
    assert sum(s.excluded.get("clips outside the class subfolders", 0) for s in split.values()) == 1
    assert len(split["train"]) + len(split["test"]) == 8
    (tmp_path / "t.csv").write_text(
        "path,sound\nlow/0.wav,low\nlow/1.wav,\nhigh/0.wav,high\nhigh/1.wav,high\nlow/2.wav,low\n"
    )
    table = {**settings, "table": str(tmp_path / "t.csv"), "label_column": "sound"}
    with pytest.raises(
        UnusableExamplesError,
        match=r"reader\.unlabelled: 1 rows of .*t\.csv have an empty sound "
        r"cell \(1\.wav\)",
    ):
        audio_files("train", tmp_path / "c3", **table)
    split = _both(audio_files, tmp_path / "c4", **table, unlabelled="skip")
    assert sum(s.excluded.get("rows with an empty label", 0) for s in split.values()) == 1
    assert sorted(torch.cat([s.labels for s in split.values()]).tolist()) == [0, 0, 1, 1]  # high=0, low=1


def test_text_rows_without_a_label_name_the_key_or_are_counted_as_unlabelled(tmp_path):
    def part(i):
        return "valid" if i == 7 else "train" if i < 15 else "test"

    rows = [f"the film {i},{'' if i in (4, 9) else ('good' if i % 2 else 'bad')},{part(i)}" for i in range(20)]
    (tmp_path / "reviews.csv").write_text("text,label,part\n" + "\n".join(rows) + "\n")
    settings = {
        "path": str(tmp_path / "reviews.csv"),
        "label_column": "label",
        "seq_len": 8,
        "vocab_size": 50,
        "split_by": "column",
        "split_column": "part",
    }
    with pytest.raises(
        CorruptDataError,
        match=r"reviews\.csv row 5: missing label in column 'label' \(or set "
        r"reader\.unlabelled: skip",
    ):
        text_table("train", tmp_path / "c1", **settings)
    train = text_table("train", tmp_path / "c2", unlabelled="skip", **settings)
    test = text_table("test", tmp_path / "c2", unlabelled="skip", **settings)
    neither = "rows in neither split (part is neither 'train' nor 'test')"
    assert train.excluded == {"rows with an empty label": 2, neither: 1} and test.excluded == {neither: 1}
    assert len(train) == 12 and len(test) == 5 and set(train.labels.tolist()) == {0, 1}


def test_unknown_policy_values_are_named_when_the_yaml_is_loaded(tmp_path):
    _recordings(tmp_path)
    write_domain(
        tmp_path,
        "imu_bad",
        domain="d",
        role="transfer",
        inputs=INPUTS,
        batch_size=4,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
        reader={
            "_target_": "dabs_rq.data.generic.sensor.sensor_arrays",
            "path": "recordings",
            "labels_csv": "labels.csv",
            "label_column": "activity",
            "window": WINDOW,
            "short": "drop",
        },
    )
    with pytest.raises(UserError, match=r"reader\.short: must be one of error, skip, got 'drop'"):
        domains.load("imu_bad", extra=[tmp_path])


def test_left_out_keeps_plain_counts_and_one_line():
    left = LeftOut("set", "train")
    left.add("recordings not in labels_csv", 2, ["a.npy", "b.npy"])
    left.add("recordings not in labels_csv", 3, ["c.npy", "d.npy"])
    left.add("nothing", 0)
    dataset = left.attach(type("D", (), {})())
    assert dataset.excluded == {"recordings not in labels_csv": 5} and type(dataset.excluded) is dict
    assert left.line() == "left out of set train: 5 recordings not in labels_csv (a.npy, b.npy, c.npy, ...)"
    assert LeftOut.from_state("set", "train", left.state()).line() == left.line()


# --------------------------------------------------------------------------- DABS and embedded readers


def test_glue_and_paws_x_rows_dabs_drops_are_counted_in_excluded_and_logged(tmp_path_factory, tmp_path, caplog):
    from tests import text_fixtures as fx

    root = fx.write_text_data_root(tmp_path_factory.mktemp("text_data"))
    caplog.set_level(logging.WARNING)
    for name, reason in (
        ("sst2", "rows with an empty input (drop_empty, as DABS)"),
        ("paws_en", "rows labelled -1 (unlabelled, as DABS)"),
    ):
        for cache in ("c1", "c1"):  # built, then read from the cache: the same counts and line
            train = DomainDataModule(domains.load(name), cache_dir=tmp_path / cache, data_root=root).split("train")
            assert train.excluded == {reason: 1}, (name, train.excluded)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("left out of")]
    assert sum("empty input" in line for line in lines) == 2 and sum("labelled -1" in line for line in lines) == 2


def test_mscoco_and_vqa_count_what_dabs_leaves_out(tmp_path_factory, tmp_path):
    from tests.conftest import fixture_root, load_split
    from tests.dabs_fixtures import write_mscoco, write_vqa
    from tests.tokenizer_fixtures import write_bert_tokenizer

    root = fixture_root(tmp_path_factory, write_mscoco, write_vqa, write_bert_tokenizer)
    coco = load_split("mscoco", "test", root, tmp_path)
    assert coco.excluded == {"images without an instance annotation (as DABS)": 1} and len(coco) == 5
    vqa = load_split("vqa", "test", root, tmp_path)
    assert vqa.excluded == {"questions whose gold answer is not a choice (as DABS)": 4} and len(vqa) == 8


def test_imagenet_val_images_outside_the_train_classes_stop_the_run(tmp_path):
    from dabs_rq.data.readers import images
    from tests.image_fixtures import solid, write_imagenet

    root = tmp_path / "imagenet"
    write_imagenet(root)
    assert images.imagenet("test", tmp_path / "c1", root=root).excluded == {}
    solid(0, 9).save(root / "val" / "ILSVRC2012_val_99999999.JPEG")
    with pytest.raises(UserError, match=r"val holds 1 images outside the class folders \(ILSVRC2012_val_99999999"):
        images.imagenet("test", tmp_path / "c2", root=root)
    (root / "val" / "ILSVRC2012_val_99999999.JPEG").unlink()
    (root / "val" / "n99999999").mkdir()
    solid(0, 9).save(root / "val" / "n99999999" / "x.JPEG")
    with pytest.raises(UserError, match=r"has 1 folders of 1 images that are not classes of the train folder"):
        images.imagenet("test", tmp_path / "c3", root=root)


def test_audio_mnist_file_names_without_a_digit_are_corrupt_not_mislabelled(tmp_path):
    from dabs_rq.data.readers import speech
    from tests.speech_fixtures import write_audio_mnist, write_clip

    write_audio_mnist(tmp_path)
    write_clip(tmp_path / "audio_mnist" / "data" / "01" / "12_01_0.wav", rate=48_000)
    settings = {"root": tmp_path / "audio_mnist", "mean": -90.0, "std": 12.0}
    with pytest.raises(CorruptDataError, match=r"12_01_0\.wav: file name is not <digit>_<speaker>_<n>\.wav"):
        speech.audio_mnist("train", tmp_path / "c1", **settings)
    train = speech.audio_mnist("train", tmp_path / "c2", on_corrupt="skip", **settings)
    assert len(train) == 6 and train.excluded == {"list lines and clips corrupt (on_corrupt=skip)": 1}


def test_pamap2_runs_too_short_for_a_window_are_counted(tmp_path):
    import pandas as pd

    from dabs_rq.data.readers.pamap2 import pamap2
    from tests.dabs_fixtures import write_pamap2

    folder = write_pamap2(tmp_path)
    path = folder / "subject101.dat"
    table = pd.read_csv(path, sep=" ", header=None)
    first = table.index[table[1] == 2][:100]  # subject 101 does activity 2 for 100 rows only
    table = table[(table[1] != 2) | table.index.isin(first)]
    table.to_csv(path, sep=" ", header=False, index=False, na_rep="NaN", float_format="%.6g")
    train = pamap2("train", tmp_path / "cache", root=tmp_path / "pamap2", windows="grid")
    assert train.excluded == {"(subject, activity) runs of at most window=320 rows (no window, as DABS)": 1}


def test_embedded_readers_never_drop_or_invent_examples_silently(tmp_path, monkeypatch):
    from dabs_rq.data.embedded import spoken_digits, watch_imu, wordnet

    with pytest.raises(
        UserError,
        match=r"^reader\.window: 140 of the 140 recordings are shorter than window=5000 "
        r"steps \(the shortest has \d+\); lower reader\.window$",
    ):
        watch_imu.watch_exercises("train", tmp_path / "c1", window=5000)
    data = tmp_path / "data.noun"
    data.write_text(
        "  1 This software and database is being provided\n"
        "00001740 03 n 01 entity 0 000 | that which is perceived\n"
        "00001930 03 n 01 physical_entity 0 000\n"
    )
    with pytest.raises(CorruptDataError, match=r"data\.noun line 3: not a synset line"):
        wordnet.parse_data_file(data)

    def silent(utterances, seed):
        return 22050, [np.zeros(0, dtype=np.int16) for _ in utterances]

    monkeypatch.setattr(spoken_digits, "synthesize_all", silent)
    with pytest.raises(RuntimeError, match="espeak-ng produced no audio"):
        spoken_digits.spoken_digits(
            "train",
            tmp_path / "c2",
            n_speakers=2,
            pretrain_speakers=1,
            digit_test_speakers=1,
            speaker_id_speakers=1,
            repetitions=1,
        )
