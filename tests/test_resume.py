"""Resumable jobs: a killed (SIGKILL) or preempted (SIGUSR1) pretraining run resumes from its last
checkpoint when the same command is re-run; a finished job is detected and not redone; a job folder
or a stored record from another config is never reused or replaced silently."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

RECORD = "records/embedded/embedded_watch_exercise/rq/seed0.json"


def _command(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dabs_rq.cli", "experiment=embedded", "domain=embedded_sensor", "algorithm=rq",
            "model=tiny", "logger=none", "trainer.enable_progress_bar=false", "transfer.epochs=2",
            "pretrain.max_steps=60", "pretrain.checkpoint_every_n_steps=5", "pretrain.batch_size=16", f"results_dir={tmp_path / 'results'}",
            f"hydra.run.dir={tmp_path / 'job'}", *extra]


def _env(data_cache: Path) -> dict:
    return {**os.environ, "DABS_RQ_CACHE": str(data_cache)}


def _start_and_signal(tmp_path: Path, data_cache: Path, signum: int) -> tuple[subprocess.Popen, int]:
    """Start the job, wait for its first periodic checkpoint, then send ``signum``."""
    ckpt = tmp_path / "job/checkpoints/last.ckpt"
    proc = subprocess.Popen(_command(tmp_path), env=_env(data_cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ckpt.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    step_at_signal = torch.load(ckpt, weights_only=True)["global_step"]
    proc.send_signal(signum)
    proc.wait(timeout=300)
    return proc, step_at_signal


def _rerun(tmp_path: Path, data_cache: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(tmp_path, *extra), env=_env(data_cache), capture_output=True, text=True,
                          timeout=600)


def test_sigkill_mid_pretraining_resumes_from_last_checkpoint_then_finished_job_is_skipped(tmp_path, data_cache):
    proc, step = _start_and_signal(tmp_path, data_cache, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and 0 < step < 60
    assert not (tmp_path / "results" / RECORD).exists()

    resumed = _rerun(tmp_path, data_cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming pretraining from" in resumed.stdout
    record = json.loads((tmp_path / "results" / RECORD).read_text())
    assert record["pretraining"]["steps"] == 60
    before = (tmp_path / "results" / RECORD).read_bytes()

    again = _rerun(tmp_path, data_cache)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already finished" in again.stdout and "resuming" not in again.stdout
    assert (tmp_path / "results" / RECORD).read_bytes() == before


def test_preemption_signal_saves_a_checkpoint_and_exits_then_resumes(tmp_path, data_cache):
    proc, _ = _start_and_signal(tmp_path, data_cache, signal.SIGUSR1)
    stderr = proc.stderr.read()
    assert proc.returncode == 128 + signal.SIGUSR1, stderr[-2000:]
    assert "stopped by SIGUSR1 at step" in stderr and "Traceback" not in stderr
    saved = torch.load(tmp_path / "job/checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert 0 < saved < 60

    resumed = _rerun(tmp_path, data_cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming pretraining from" in resumed.stdout
    assert json.loads((tmp_path / "results" / RECORD).read_text())["pretraining"]["steps"] == 60


def test_a_finished_pretraining_is_not_repeated_and_other_configs_are_refused(tmp_path, data_cache):
    first = _rerun(tmp_path, data_cache, "pretrain.max_steps=4")
    assert first.returncode == 0, first.stderr[-2000:]
    state = json.loads((tmp_path / "job/run_state.json").read_text())
    assert state["pretrain_done"] and list(state["transfer_done"]) == ["embedded_watch_exercise"]

    # Same job folder, another config: refused before any work, naming what differs.
    other = _rerun(tmp_path, data_cache, "pretrain.max_steps=5")
    assert other.returncode == 2
    assert "another config" in other.stderr and "pretrain.max_steps: 4 -> 5" in other.stderr

    # Another job folder, same record cell, another config: the stored record is not replaced ...
    record = tmp_path / "results" / RECORD
    before = record.read_bytes()
    clash = _rerun(tmp_path, data_cache, "pretrain.max_steps=5", f"hydra.run.dir={tmp_path / 'job2'}")
    assert clash.returncode == 2 and "already holds a result of another config" in clash.stderr
    assert "overwrite=true" in clash.stderr and record.read_bytes() == before
    # ... unless asked to.
    forced = _rerun(tmp_path, data_cache, "pretrain.max_steps=5", f"hydra.run.dir={tmp_path / 'job2'}",
                    "overwrite=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads(record.read_text())["pretraining"]["steps"] == 5


def test_a_rerun_after_a_failed_transfer_redoes_only_that_transfer(tmp_path, data_cache, capsys):
    from dabs_rq.run import run
    from tests.conftest import compose_config

    overrides = ["experiment=embedded", "domain=embedded_image", "algorithm=rq", "model=tiny", "logger=none",
                 "pretrain.max_steps=3", "transfer.epochs=2", "trainer.enable_progress_bar=false",
                 f"results_dir={tmp_path / 'results'}", f"output_dir={tmp_path / 'job'}", f"cache_dir={data_cache}"]
    run(compose_config(overrides))
    results = tmp_path / "results/records/embedded"
    mnist = (results / "embedded_mnist/rq/seed0.json").read_bytes()
    encoder = (tmp_path / "job/encoder.pt").read_bytes()
    # as if the job had died during its second transfer: no record, not marked done
    (results / "embedded_uci_digits/rq/seed0.json").unlink()
    state_path = tmp_path / "job/run_state.json"
    state = json.loads(state_path.read_text())
    state["transfer_done"] = {"embedded_mnist": state["transfer_done"]["embedded_mnist"]}
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    records = run(compose_config(overrides))
    out = capsys.readouterr().out
    assert "pretraining already finished" in out and "embedded_mnist rq" not in out
    assert [r["dataset"] for r in records] == ["embedded_mnist", "embedded_uci_digits"]
    assert (results / "embedded_mnist/rq/seed0.json").read_bytes() == mnist  # not redone
    assert (results / "embedded_uci_digits/rq/seed0.json").exists()
    assert (tmp_path / "job/encoder.pt").read_bytes() == encoder  # pretraining not redone
