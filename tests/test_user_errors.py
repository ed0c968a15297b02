"""One line for a user's mistake (exit 2, before any training), a traceback for a bug (exit 1)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hydra.errors import InstantiationException

from dabs_rq.cli import _user_error
from dabs_rq.errors import UserError
from tests.generic_helpers import run_public_command, write_domain
from tests.test_generic_sensor import INPUTS, _recordings, _yamls


def _one_line_before_training(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("dabs-rq: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "pretrain/loss" not in done.stdout + done.stderr  # nothing was trained
    return lines[0]


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


def test_a_binary_task_on_three_classes_is_one_line_before_training(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _recordings(mine)
    path = _yamls(mine)
    path.write_text(path.read_text().replace("dabs_rq.tasks.MulticlassTask", "dabs_rq.tasks.BinaryTask")
                    .replace("num_classes: 3\n", ""))
    line = _one_line_before_training(run_public_command("my_imu", mine, tmp_path, data_cache))
    assert "a binary task needs labels 0 and 1, but the labels take 3 values (0, 1, 2)" in line
    assert "MulticlassTask with num_classes: 3" in line and "fix 'task' in its YAML" in line


def test_a_bug_inside_a_job_keeps_its_traceback(tmp_path, data_cache):
    """A plain ValueError raised by code (here a user's own reader with a bug) is not reduced to a line."""
    (tmp_path / "buggy_reader.py").write_text(textwrap.dedent("""
        def read(split, cache_dir, **kwargs):
            raise ValueError("an internal invariant broke")
    """))
    mine = tmp_path / "mine"
    mine.mkdir()
    reader = {"_target_": "buggy_reader.read"}
    write_domain(mine, "buggy", domain="Bugs", role="pretrain", inputs=INPUTS, reader=reader, batch_size=8,
                 transfer=["buggy_task"])
    write_domain(mine, "buggy_task", domain="Bugs", role="transfer", inputs=INPUTS, reader=reader, batch_size=8,
                 task={"_target_": "dabs_rq.tasks.MulticlassTask", "num_classes": 3})
    env_path = f"PYTHONPATH={tmp_path}"
    done = subprocess.run(["env", env_path, *_cli_args(mine, tmp_path, data_cache, "buggy")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" in done.stderr and "an internal invariant broke" in done.stderr
    assert "dabs-rq: error:" not in done.stderr


def _cli_args(mine, tmp_path, data_cache, domain):
    return [f"DABS_RQ_DOMAINS={mine}", f"DABS_RQ_CACHE={data_cache}", sys.executable, "-m", "dabs_rq.cli",
            f"domain={domain}", "model=tiny", "logger=none", "pretrain.max_steps=2", "transfer.epochs=1",
            "trainer.enable_progress_bar=false", f"results_dir={tmp_path / 'results'}",
            f"hydra.run.dir={tmp_path / 'job'}"]


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


def test_a_sweep_checks_every_job_before_starting_the_first(tmp_path, data_cache):
    """-m domain=good,broken used to run the good job to the end before the broken one failed."""
    import os

    env = {**os.environ, "DABS_RQ_CACHE": str(data_cache), "DABS_RQ_RESULTS": str(tmp_path / "results")}
    base = [sys.executable, "-m", "dabs_rq.cli", "-m", "experiment=embedded", "model=tiny", "logger=none",
            "seed=0", "pretrain.max_steps=2", "transfer.epochs=1", "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    done = subprocess.run([*base, "domain=embedded_sensor,embedded_sensr", "algorithm=none"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "job domain=embedded_sensr algorithm=none" in done.stderr and "unknown domain/dataset 'embedded_sensr'" \
        in done.stderr
    assert "1 of 2 jobs of this sweep are invalid; none was started" in done.stderr
    assert not (tmp_path / "results").exists() and "Traceback" not in done.stderr  # the good job never ran
    # a dataset setting that only one job reads is checked in that job
    done = subprocess.run([*base, "domain=embedded_sensor,embedded_image", "algorithm=none",
                           "+dataset_overrides.embedded_mnist.batch_size=0"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "job domain=embedded_image algorithm=none" in done.stderr and "batch_size' must be a positive" in done.stderr
    assert not (tmp_path / "results").exists()
