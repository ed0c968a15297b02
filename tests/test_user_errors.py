"""One line for a user's mistake (exit 2, before any training), a traceback for a bug (exit 1)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hydra.errors import InstantiationException

from dabs_rq.cli import _user_error
from dabs_rq.errors import UserError
from tests.generic_helpers import run_public_command, run_tiny_sweep, write_domain
from tests.test_generic_sensor import INPUTS, _recordings, _yamls


def _one_line_before_training(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("dabs-rq: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "pretrain/loss" not in done.stdout + done.stderr  # nothing was trained
    return lines[0]


@pytest.mark.integration
def test_sensor_inputs_whose_channels_do_not_match_the_data_are_one_line_before_training(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _recordings(mine)  # 3 channels
    _yamls(mine)
    for name in ("my_imu", "my_imu_activity"):  # both YAMLs must agree with each other, and both are wrong
        path = mine / f"{name}.yaml"
        path.write_text(path.read_text().replace("channels: 3", "channels: 6"))
    line = _one_line_before_training(run_public_command("my_imu", mine, tmp_path, data_cache))
    assert "inputs[0] (SegmentEmbedding1d) expects examples of shape [40, 6] but the data give [40, 3]" in line
    assert "fix 'inputs' in its YAML" in line


@pytest.mark.integration
def test_a_binary_task_on_three_classes_is_one_line_before_training(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _recordings(mine)
    path = _yamls(mine)
    path.write_text(
        path.read_text()
        .replace("dabs_rq.tasks.MulticlassTask", "dabs_rq.tasks.BinaryTask")
        .replace("num_classes: 3\n", "")
    )
    line = _one_line_before_training(run_public_command("my_imu", mine, tmp_path, data_cache))
    assert "a binary task needs labels 0 and 1, but the labels take 3 values (0, 1, 2)" in line
    assert "MulticlassTask with num_classes: 3" in line and "fix 'task' in its YAML" in line


@pytest.mark.integration
def test_a_bug_inside_a_job_keeps_its_traceback(tmp_path, data_cache):
    """A plain ValueError raised by code (here a user's own reader with a bug) is not reduced to a line."""
    (tmp_path / "buggy_reader.py").write_text(
        textwrap.dedent("""
        def read(split, cache_dir, **kwargs):
            raise ValueError("an internal invariant broke")
    """)
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    reader = {"_target_": "buggy_reader.read"}
    write_domain(
        mine,
        "buggy",
        domain="Bugs",
        role="pretrain",
        inputs=INPUTS,
        reader=reader,
        batch_size=8,
        transfer=["buggy_task"],
    )
    write_domain(
        mine,
        "buggy_task",
        domain="Bugs",
        role="transfer",
        inputs=INPUTS,
        reader=reader,
        batch_size=8,
        task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3},
    )
    env_path = f"PYTHONPATH={tmp_path}"
    done = subprocess.run(
        ["env", env_path, *_cli_args(mine, tmp_path, data_cache, "buggy")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" in done.stderr and "an internal invariant broke" in done.stderr
    assert "dabs-rq: error:" not in done.stderr


def _cli_args(mine, tmp_path, data_cache, domain):
    return [
        f"DABS_RQ_DOMAINS={mine}",
        f"DABS_RQ_CACHE={data_cache}",
        sys.executable,
        "-m",
        "dabs_rq.cli",
        f"domain={domain}",
        "model=tiny",
        "logger=none",
        "pretrain.max_steps=2",
        "transfer.epochs=1",
        "trainer.enable_progress_bar=false",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={tmp_path / 'job'}",
    ]


def test_only_user_errors_become_one_line():
    assert isinstance(_user_error(UserError("bad value")), UserError)
    assert _user_error(ValueError("a bug")) is None and _user_error(OSError("disk")) is None
    assert _user_error(KeyError("x")) is None

    def wrapped(cause: BaseException) -> InstantiationException:
        err = InstantiationException("Error in call to target 'dabs_rq.tasks.MulticlassTask':")
        err.__cause__ = cause
        return err

    unknown_key = _user_error(wrapped(TypeError("__init__() got an unexpected keyword argument 'classes'")))
    assert isinstance(unknown_key, UserError) and "classes" in str(unknown_key)
    assert _user_error(wrapped(TypeError("unsupported operand type(s) for +: 'int' and 'str'"))) is None  # a bug
    assert isinstance(_user_error(wrapped(UserError("num_classes must be >= 2"))), UserError)


@pytest.mark.parametrize("module,name", [("dabs_rq.data.domains", "DomainConfigError")])
def test_config_error_types_are_user_errors(module, name):
    import importlib

    assert issubclass(getattr(importlib.import_module(module), name), UserError)


@pytest.mark.integration
def test_a_sweep_checks_every_job_before_starting_the_first(tmp_path, data_cache):
    """-m domain=good,broken used to run the good job to the end before the broken one failed."""
    base = ["seed=0", "trainer.enable_progress_bar=false"]
    done = run_tiny_sweep(tmp_path, data_cache, *base, "domain=embedded_sensor,embedded_sensr", "algorithm=none")
    assert done.returncode == 2, done.stderr[-3000:]
    assert (
        "job domain=embedded_sensr algorithm=none" in done.stderr
        and "unknown domain/dataset 'embedded_sensr'" in done.stderr
    )
    assert "1 of 2 jobs of this sweep are invalid; none was started" in done.stderr
    assert not (tmp_path / "results").exists() and "Traceback" not in done.stderr  # the good job never ran
    # a dataset setting that only one job reads is checked in that job
    done = run_tiny_sweep(
        tmp_path,
        data_cache,
        *base,
        "domain=embedded_sensor,embedded_image",
        "algorithm=none",
        "+dataset_overrides.embedded_mnist.batch_size=0",
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "job domain=embedded_image algorithm=none" in done.stderr and "batch_size' must be a positive" in done.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.integration
def test_a_corrupt_recording_names_the_fix_and_a_skip_is_said_once_per_dataset(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _recordings(mine)
    _yamls(mine)
    bad = mine / "recordings" / "run_1.npy"
    bad.write_bytes(bad.read_bytes()[:60])
    line = _one_line_before_training(run_public_command("my_imu", mine, tmp_path, data_cache))
    assert "run_1.npy" in line and "on_corrupt=skip" in line
    done = run_public_command(
        "my_imu", mine, tmp_path, data_cache, "on_corrupt=skip", f"hydra.run.dir={tmp_path / 'job2'}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in (done.stdout + done.stderr).splitlines() if "run_1.npy" in line]
    # the pretraining set and the transfer set each read the file: one 'skipped' and one 'left out' line each,
    # however many stages (checks, pretraining, transfer) look at the data
    assert sum("skipped 1 corrupt" in line for line in said) == 2, said
    assert sum("left out of" in line for line in said) == 2, said


@pytest.mark.integration
@pytest.mark.parametrize(
    "content,expected",
    [
        ("", "is empty (0 bytes); write a header row naming its columns"),
        ("file,activity\n", "has a header (file, activity) but no rows; add one row per example"),
    ],
)
def test_an_empty_or_header_only_labels_table_is_named_with_its_yaml(tmp_path, data_cache, content, expected):
    mine = tmp_path / "mine"
    _recordings(mine)
    _yamls(mine)
    (mine / "labels.csv").write_text(content)
    line = _one_line_before_training(run_public_command("my_imu", mine, tmp_path, data_cache))
    # the first YAML that reads it (the pretraining set's), the key, the file, what is wrong and the fix
    assert f"{mine / 'my_imu.yaml'}: reader.labels_csv: {mine / 'labels.csv'} {expected}" in line


@pytest.mark.integration
def test_a_typo_in_the_transfer_list_names_the_pretraining_yaml(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _recordings(mine)
    _yamls(mine)
    pretrain_yaml = mine / "my_imu.yaml"
    pretrain_yaml.write_text(pretrain_yaml.read_text().replace("- my_imu_activity", "- my_imu_activty"))
    line = _one_line_before_training(run_public_command("my_imu", mine, tmp_path, data_cache))
    assert f"{pretrain_yaml}: 'transfer' lists 'my_imu_activty', which is not a dataset YAML" in line
    assert "my_imu_activity" in line  # among the valid ones


@pytest.mark.integration
def test_a_user_yaml_shadowing_a_built_in_one_and_a_missing_extra_folder_are_refused(tmp_path, data_cache):
    from dabs_rq.paths import DOMAINS_DIR

    mine = tmp_path / "mine"
    _recordings(mine)
    _yamls(mine)
    (mine / "cifar10.yaml").write_text((DOMAINS_DIR / "cifar10.yaml").read_text())
    line = _one_line_before_training(run_public_command("my_imu", mine, tmp_path, data_cache))
    assert f"dataset 'cifar10' is defined twice: {DOMAINS_DIR / 'cifar10.yaml'} and {mine / 'cifar10.yaml'}" in line
    (mine / "cifar10.yaml").unlink()
    done = run_public_command("my_imu", mine, tmp_path, data_cache, f"extra_domain_dirs=[{tmp_path / 'nowhere'}]")
    line = _one_line_before_training(done)
    assert f"extra_domain_dirs: folder {tmp_path / 'nowhere'} does not exist" in line
