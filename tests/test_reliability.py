"""Reliability guarantees: bad names and values fail in one line before any work; results are
written atomically and never lost to concurrent writers, a full disk or an unwritable folder;
two runs with the same seed give identical numbers."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dabs_rq import io
from dabs_rq.cli import _user_error
from dabs_rq.io import write_json_atomic
from dabs_rq.run import run
from tests.conftest import compose_config

# ------------------------------------------------------------------ names: one line, exit 2, the valid ones


@pytest.mark.integration
@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm=foo", "unknown algorithm 'foo'; valid: emix, mae, none, rq, rq_emix, shed"),
        ("model=huge", "unknown model 'huge'; valid: dabs, small, tiny"),
        (
            "hydra/launcher=pbs",
            "unknown hydra/launcher 'pbs'; valid: basic, local, pool, slurm, submitit_local, submitit_slurm",
        ),
        ("logger=mlflow", "unknown logger 'mlflow'; valid: csv, none, tensorboard, wandb"),
    ],
)
def test_unknown_config_names_are_one_line_listing_the_valid_ones(tmp_path, override, message):
    sweep = ["-m", override.replace("=", "=none,", 1) if override.startswith("algorithm") else override]
    for args in ([override], sweep):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "dabs_rq.cli",
                "domain=embedded_sensor",
                *args,
                f"hydra.run.dir={tmp_path}",
                f"hydra.sweep.dir={tmp_path}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.strip() == f"dabs-rq: error: {message}"


def _fails_before_any_work(overrides: list[str], tmp_path: Path, data_cache: Path, match: str) -> None:
    cfg = compose_config(
        [
            "experiment=embedded",
            "domain=embedded_sensor",
            "model=tiny",
            "logger=none",
            f"results_dir={tmp_path / 'results'}",
            f"output_dir={tmp_path / 'out'}",
            f"cache_dir={data_cache}",
            "trainer.enable_progress_bar=false",
            *overrides,
        ]
    )
    with pytest.raises(Exception) as info:
        run(cfg)
    error = _user_error(info.value)  # what the CLI prints, as one line, with exit status 2
    assert error is not None, repr(info.value)
    assert match in str(error) and "\n" not in str(error)
    out = tmp_path / "out"
    assert not (out / "encoder.pt").exists() and not (out / "checkpoints").exists()
    assert not (tmp_path / "results" / "records").exists()


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["algorithm.module.quantizer.num_bins=1"], "num_bins"),
        (["algorithm.module.quantizer.p=1.5"], "p must be"),
        (["pretrain.batch_size=0"], "pretrain.batch_size must be a positive integer"),
        (["pretrain.max_steps=-1"], "pretrain.max_steps must be a positive integer"),
        (["transfer.batch_size=-4"], "transfer.batch_size must be a positive integer"),
        (["pretrain.lr_scaling=sqrt"], "pretrain.lr_scaling must be one of none, linear"),
        (["pretrain.checkpoint_every_n_steps=0"], "checkpoint_every_n_steps must be a positive integer"),
        (["transfer.mode=finetune"], "transfer.mode must be one of"),
        (["+algorithm.module.colour=red"], "RQContrastive.__init__() got an unexpected keyword argument 'colour'"),
        (
            ["+dataset_overrides.embedded_watch_exercise.task={_target_:dabs_rq.tasks.RegressionTask,metric:r2}"],
            "regression metric must be one of pearson, spearman; got 'r2'",
        ),
    ],
)
def test_invalid_values_are_rejected_before_any_work(tmp_path, data_cache, overrides, match):
    _fails_before_any_work(["algorithm=rq", *overrides], tmp_path, data_cache, match)


def test_a_transfer_dataset_whose_inputs_differ_from_the_encoder_is_rejected(tmp_path, data_cache):
    # The watch IMU windows have 6 channels; a transfer set declaring 3 cannot use this encoder.
    three = "[{_target_:dabs_rq.encoder.SegmentEmbedding1d,seq_len:100,segment_size:5,channels:3}]"
    _fails_before_any_work(
        ["algorithm=none", f"+dataset_overrides.embedded_watch_exercise.inputs={three}"],
        tmp_path,
        data_cache,
        "has inputs that differ from domain 'embedded_sensor'",
    )


def test_a_dataset_override_that_does_not_fit_the_yaml_is_one_line(tmp_path, data_cache):
    _fails_before_any_work(
        ["algorithm=none", "+dataset_overrides.embedded_watch_exercise.inputs.0.channels=3"],
        tmp_path,
        data_cache,
        "dataset_overrides.embedded_watch_exercise do not fit the YAML",
    )


# ------------------------------------------------------------------ storage faults


def test_an_unwritable_results_folder_is_a_clear_error_before_training(tmp_path, data_cache):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _fails_before_any_work(
        ["algorithm=rq", f"results_dir={blocker / 'results'}"],
        tmp_path,
        data_cache,
        f"results directory {blocker / 'results'} is not writable",
    )


def test_a_full_disk_is_a_clear_error_before_training(tmp_path, data_cache, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=5 * 2**20))
    _fails_before_any_work(["algorithm=rq"], tmp_path, data_cache, "has only 5 MiB free")


def test_a_failed_record_write_keeps_the_previous_record_and_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "records/x/seed0.json"
    write_json_atomic(path, {"value": 1.0})
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(path, {"value": 2.0})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["seed0.json"]


WRITER = """
import sys
from pathlib import Path
from dabs_rq.io import write_json_atomic
root, writer, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    write_json_atomic(root / f"w{writer}" / f"r{i}.json", {"writer": writer, "i": i, "pad": "x" * 4096})
    write_json_atomic(root / "shared.json", {"writer": writer, "i": i, "pad": "y" * 65536})
"""


def test_concurrent_writers_lose_no_record_and_never_leave_a_torn_one(tmp_path):
    writers, count = 6, 40
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), str(count)]) for w in range(writers)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * writers
    for w in range(writers):
        for i in range(count):
            assert json.loads((tmp_path / f"w{w}" / f"r{i}.json").read_text())["i"] == i
    shared = json.loads((tmp_path / "shared.json").read_text())  # complete: one writer's last payload
    assert shared["i"] == count - 1 and len(shared["pad"]) == 65536
    assert not list(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------------ reproducibility


@pytest.mark.slow
def test_same_seed_same_machine_gives_identical_transfer_metrics(tmp_path, data_cache):
    results = []
    for attempt in ("a", "b"):
        cfg = compose_config(
            [
                "experiment=embedded",
                "domain=embedded_sensor",
                "algorithm=rq",
                "model=tiny",
                "logger=none",
                "pretrain.max_steps=4",
                "transfer.epochs=3",
                "seed=3",
                f"results_dir={tmp_path / attempt}",
                f"output_dir={tmp_path / attempt / 'out'}",
                f"cache_dir={data_cache}",
                "trainer.enable_progress_bar=false",
            ]
        )
        (record,) = run(cfg)
        results.append(record)
    first, second = results
    assert first["value"] == second["value"]
    a = torch.load(tmp_path / "a/out/encoder.pt", weights_only=True)
    b = torch.load(tmp_path / "b/out/encoder.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Every record says how to re-run its table cell.
    for key in ("seed", "config", "versions", "git_commit", "fingerprint"):
        assert key in first
    assert first["seed"] == 3 and first["config"]["pretrain"]["max_steps"] == 4
    assert OmegaConf.create(first["config"]).algorithm.name == "rq"
    assert first["versions"]["torch"] in torch.__version__ and first["git_commit"]


# ------------------------------------------------------------------ corrupt data through the config


def test_on_corrupt_reaches_file_readers_from_the_config_and_not_generated_ones(tmp_path):
    from dabs_rq.data import domains
    from dabs_rq.data.datamodule import DomainDataModule
    from dabs_rq.data.storage import CorruptDataError
    from tests import image_fixtures as fx
    from tests.test_data_integrity import truncate

    fx.write_dtd(tmp_path / "dtd")
    bad = truncate(tmp_path / "dtd" / "dtd" / "images" / "banded" / "banded_0001.jpg")
    dtd = domains.load("dtd")
    with pytest.raises(CorruptDataError, match=str(bad)):
        DomainDataModule(dtd, tmp_path / "c1", data_root=tmp_path).split("train")
    skipping = DomainDataModule(dtd, tmp_path / "c2", data_root=tmp_path, on_corrupt="skip")
    assert len(skipping.split("train")) == 5  # one of the six fixture images left out
    assert "on_corrupt" in skipping.reader_kwargs()
    generated = DomainDataModule(domains.load("embedded_sensor"), tmp_path / "c3", on_corrupt="skip")
    assert "on_corrupt" not in generated.reader_kwargs()


def test_an_unknown_on_corrupt_value_is_rejected_before_any_work(tmp_path, data_cache):
    _fails_before_any_work(
        ["algorithm=rq", "on_corrupt=ignore"],
        tmp_path,
        data_cache,
        "on_corrupt must be one of error, skip; got 'ignore'",
    )
