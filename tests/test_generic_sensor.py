"""Generic sensor reader: a brand-new time-series dataset from YAML alone, through the public command."""

from __future__ import annotations

import numpy as np
import pytest

from dabs_rq.data import domains
from dabs_rq.data.domains import DomainConfigError
from tests.conftest import load_split
from tests.generic_helpers import public_run_adds_row, run_public_command, write_domain

INPUTS = [{"_target_": "dabs_rq.encoder.SegmentEmbedding1d", "seq_len": 40, "segment_size": 4, "channels": 3}]


def _recordings(folder, per_class=4, length=200, classes=("walk", "run", "sit")):
    """Recordings whose frequency depends on the class; labels.csv maps file -> label."""
    (folder / "recordings").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["file,activity"]
    t = np.arange(length)[:, None]
    for c, name in enumerate(classes):
        for k in range(per_class):
            signal = np.sin(t * (0.05 + 0.1 * c) + rng.uniform(0, 6, size=3)) + 0.1 * rng.normal(size=(length, 3))
            np.save(folder / "recordings" / f"{name}_{k}.npy", signal.astype(np.float32))
            rows.append(f"{name}_{k}.npy,{name}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def _yamls(folder, **reader_changes):
    reader = {
        "_target_": "dabs_rq.data.generic.sensor.sensor_arrays",
        "path": "recordings",
        "labels_csv": "labels.csv",
        "window": 40,
        "stride": 20,
        "split_seed": 1,
        "test_fraction": 0.25,
    }
    write_domain(
        folder,
        "my_imu",
        display_name="My IMU",
        domain="My sensors",
        role="pretrain",
        inputs=INPUTS,
        reader={**reader, "label_type": "none"},
        batch_size=8,
        transfer=["my_imu_activity"],
    )
    return write_domain(
        folder,
        "my_imu_activity",
        display_name="My IMU activity",
        domain="My sensors",
        role="transfer",
        inputs=INPUTS,
        reader={**reader, "label_column": "activity", **reader_changes},
        batch_size=8,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
    )


@pytest.mark.integration
def test_a_new_sensor_domain_runs_pretrain_transfer_table_from_yaml_alone(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _recordings(mine)
    _yamls(mine)
    stored = public_run_adds_row(
        mine, tmp_path, data_cache, "my_imu", "my_imu_activity", "My IMU activity", "My sensors"
    )
    # 12 recordings of 200 steps -> 9 windows each; 3 recordings held out (whole recordings)
    assert stored["protocol"]["n_train"] == 9 * 9 and stored["protocol"]["n_test"] == 3 * 9


def test_splits_labels_and_normalisation(tmp_path):
    mine = tmp_path / "mine"
    _recordings(mine)
    cfg = domains.load("my_imu_activity", extra=[mine]) if _yamls(mine) else None
    train = load_split("my_imu_activity", "train", tmp_path, tmp_path / "cache", cfg=cfg)
    test = load_split("my_imu_activity", "test", tmp_path, tmp_path / "cache", cfg=cfg)
    (x,), y = train[list(range(len(train)))]
    assert x.shape == (81, 40, 3) and sorted(set(y.tolist())) == [0, 1, 2]
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 0.05  # train statistics
    assert len(test) == 27
    # paths are resolved against the YAML's folder, so the run works from any directory
    assert cfg.reader.path == str((mine / "recordings").resolve())


def test_csv_recordings_with_per_row_labels_and_file_splits(tmp_path):
    mine = tmp_path / "mine"
    for split, n in (("train", 3), ("test", 1)):
        (mine / split).mkdir(parents=True)
        for k in range(n):
            rows = ["ax,ay,state"] + [
                f"{np.sin(i / 5):.4f},{np.cos(i / 5):.4f},{'up' if i < 45 else 'down'}" for i in range(100)
            ]
            (mine / split / f"rec{k}.csv").write_text("\n".join(rows) + "\n")
    inputs = [{"_target_": "dabs_rq.encoder.SegmentEmbedding1d", "seq_len": 20, "segment_size": 4, "channels": 2}]
    write_domain(
        mine,
        "rows",
        domain="d",
        role="transfer",
        inputs=inputs,
        batch_size=4,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 2},
        reader={
            "_target_": "dabs_rq.data.generic.sensor.sensor_arrays",
            "split_by": "files",
            "train": "train",
            "test": "test",
            "label_column": "state",
            "channels": ["ax", "ay"],
            "window": 20,
        },
    )
    cfg = domains.load("rows", extra=[mine])
    train = load_split("rows", "train", tmp_path, tmp_path / "cache", cfg=cfg)
    (x,), y = train[list(range(len(train)))]
    assert x.shape == (15, 20, 2)  # 3 files x 5 windows
    assert y.tolist() == [1, 1, 0, 0, 0] * 3  # a window's most frequent label; classes sorted: down=0, up=1
    assert len(load_split("rows", "test", tmp_path, tmp_path / "cache", cfg=cfg)) == 5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"windw": 40}, "reader.windw: is not a key of sensor_arrays; valid keys: split_by"),
        ({"window": "forty"}, "reader.window: must be of type int, got 'forty'"),
        ({"labels_csv": "nope.csv"}, "reader.labels_csv: file or folder"),
        ({"label_column": "activty"}, "reader.label_column: column 'activty' is not in"),
        ({"split_by": "random"}, "reader.split_by: must be one of ratio, column, files, got 'random'"),
        ({"split_by": "column"}, "reader.split_column: is needed with split_by: column"),
        ({"test_fraction": 1.5}, "reader.test_fraction: must be in (0, 1), got 1.5"),
    ],
)
def test_schema_mistakes_name_the_file_the_key_and_what_is_expected(tmp_path, change, message):
    mine = tmp_path / "mine"
    _recordings(mine)
    path = _yamls(mine, **change)
    with pytest.raises(DomainConfigError) as err:
        domains.load("my_imu_activity", extra=[mine])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_a_corrupt_recording_stops_the_run_or_is_skipped(tmp_path):
    from dabs_rq.data.storage import CorruptDataError

    mine = tmp_path / "mine"
    _recordings(mine)
    bad = mine / "recordings" / "run_1.npy"
    bad.write_bytes(bad.read_bytes()[:60])
    cfg = domains.load("my_imu_activity", extra=[mine]) if _yamls(mine) else None
    with pytest.raises(CorruptDataError, match="run_1.npy"):
        load_split("my_imu_activity", "train", tmp_path, tmp_path / "c1", cfg=cfg)
    from dabs_rq.data.datamodule import DomainDataModule

    skipping = DomainDataModule(cfg, tmp_path / "c2", on_corrupt="skip")
    assert len(skipping.split("train")) + len(skipping.split("test")) == 11 * 9


def test_inputs_that_cannot_take_the_readers_windows_are_named(tmp_path):
    mine = tmp_path / "mine"
    _recordings(mine)
    path = _yamls(mine, window=60)  # the transfer YAML's SegmentEmbedding1d still says seq_len 40
    with pytest.raises(DomainConfigError) as err:
        domains.load("my_imu_activity", extra=[mine])
    assert str(err.value) == (
        f"{path}: inputs[0].seq_len: is 40 but the reader makes 60 (from its settings); make them equal"
    )


@pytest.mark.integration
def test_a_task_with_too_few_classes_for_the_labels_fails_before_pretraining(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _recordings(mine)
    _yamls(mine)
    path = mine / "my_imu_activity.yaml"
    path.write_text(path.read_text().replace("num_classes: 3", "num_classes: 2"))
    done = run_public_command("my_imu", mine, tmp_path, data_cache)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "dabs-rq: error: dataset my_imu_activity (train split): labels run from 0 to 2 "
        "but task.num_classes is 2 (labels must be 0 .. num_classes - 1); "
        "fix 'task' in its YAML"
    )
    assert not (tmp_path / "job" / "my_imu" / "encoder.pt").exists()
