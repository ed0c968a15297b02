"""Resumable jobs: a killed (SIGKILL) or preempted (SIGUSR1) pretraining run resumes from its last
checkpoint when the same command is re-run, exactly (the same encoder, bit for bit, as a run never
interrupted); checkpoints come by steps and by time; a finished job is detected and not redone; a job
folder or a stored record from another config is never reused or replaced silently."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from dabs_rq.checkpointing import AtomicCheckpointIO, ResumableCheckpoint, fingerprint
from dabs_rq.data.tensor_dataset import TensorInputsDataset, make_loader
from dabs_rq.errors import UserError

RECORD = "records/embedded/embedded_watch_exercise/rq/seed0.json"


def _command(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dabs_rq.cli",
        "experiment=embedded",
        "domain=embedded_sensor",
        "algorithm=rq",
        "model=tiny",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "transfer.epochs=2",
        "pretrain.max_steps=60",
        "pretrain.checkpoint_every_n_steps=5",
        "pretrain.batch_size=16",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={tmp_path / 'job'}",
        *extra,
    ]


def _env(data_cache: Path) -> dict:
    return {**os.environ, "DABS_RQ_CACHE": str(data_cache)}


def _start_and_signal(tmp_path: Path, data_cache: Path, signum: int) -> tuple[subprocess.Popen, int]:
    """Start the job, wait for its first periodic checkpoint, then send ``signum``."""
    ckpt = tmp_path / "job/checkpoints/last.ckpt"
    proc = subprocess.Popen(
        _command(tmp_path), env=_env(data_cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
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
    return subprocess.run(_command(tmp_path, *extra), env=_env(data_cache), capture_output=True, text=True, timeout=600)


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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
    forced = _rerun(
        tmp_path, data_cache, "pretrain.max_steps=5", f"hydra.run.dir={tmp_path / 'job2'}", "overwrite=true"
    )
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert json.loads(record.read_text())["pretraining"]["steps"] == 5


def test_a_rerun_after_a_failed_transfer_redoes_only_that_transfer(tmp_path, data_cache, caplog):
    from dabs_rq.run import run
    from tests.conftest import compose_config

    overrides = [
        "experiment=embedded",
        "domain=embedded_image",
        "algorithm=rq",
        "model=tiny",
        "logger=none",
        "pretrain.max_steps=3",
        "transfer.epochs=2",
        "trainer.enable_progress_bar=false",
        f"results_dir={tmp_path / 'results'}",
        f"output_dir={tmp_path / 'job'}",
        f"cache_dir={data_cache}",
    ]
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
    caplog.set_level(logging.INFO, logger="dabs_rq")
    caplog.clear()
    records = run(compose_config(overrides))
    out = caplog.text
    assert "pretraining already finished" in out and "embedded_mnist rq" not in out
    assert [r["dataset"] for r in records] == ["embedded_mnist", "embedded_uci_digits"]
    assert (results / "embedded_mnist/rq/seed0.json").read_bytes() == mnist  # not redone
    assert (results / "embedded_uci_digits/rq/seed0.json").exists()
    assert (tmp_path / "job/encoder.pt").read_bytes() == encoder  # pretraining not redone


# --------------------------------------------------------------------------- exact resumption


def _exact_command(tmp_path: Path, job: str, algorithm: str) -> list[str]:
    # 200 batches of 16 an epoch: every checkpoint (every 7 steps) and the kill fall mid-epoch.
    return [
        sys.executable,
        "-m",
        "dabs_rq.cli",
        "experiment=embedded",
        "domain=embedded_sensor",
        f"algorithm={algorithm}",
        "model=tiny",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "transfer.epochs=1",
        "table.rebuild_on_end=false",
        "pretrain.max_steps=40",
        "pretrain.checkpoint_every_n_steps=7",
        "pretrain.batch_size=16",
        f"results_dir={tmp_path / job / 'results'}",
        f"hydra.run.dir={tmp_path / job}",
    ]


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ["rq", "emix"])
def test_a_run_killed_mid_epoch_and_resumed_ends_with_the_encoder_of_an_uninterrupted_run(
    tmp_path, data_cache, algorithm
):
    """model=tiny keeps dropout and attention dropout on; RQ and e-Mix draw random numbers every step."""
    env = _env(data_cache)
    # The uninterrupted run and the one to kill side by side.
    whole = subprocess.Popen(
        _exact_command(tmp_path, "whole", algorithm),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = subprocess.Popen(
        _exact_command(tmp_path, "killed", algorithm),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = tmp_path / "killed/checkpoints/last.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists():
        assert killed.poll() is None, killed.communicate()[1][-2000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    killed.kill()
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    saved = torch.load(ckpt, weights_only=True)
    step = saved["global_step"]
    assert 0 < step < 40 and step % 7 == 0
    # The data order's position is in the checkpoint: epoch 0, as many batches as steps.
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": step}]
    assert not (tmp_path / "killed/encoder.pt").exists()

    resumed = subprocess.run(
        _exact_command(tmp_path, "killed", algorithm), env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming pretraining from {ckpt}" in resumed.stdout
    assert "weights_only" not in resumed.stderr and "not resumable" not in resumed.stderr
    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-2000:]

    expected = torch.load(tmp_path / "whole/encoder.pt", weights_only=True)
    got = torch.load(tmp_path / "killed/encoder.pt", weights_only=True)
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"resumed at step {step}: {different} differ"


class _NoisyTensors(TensorInputsDataset):
    """Draws random numbers while fetching (like the speech reader's random window)."""

    def __getitem__(self, index):
        (x,), y = super().__getitem__(index)
        return (x + 0.1 * (torch.rand(x.shape) + float(np.random.rand()) + random.random()),), y


class _Noisy(pl.LightningModule):
    """Draws from every stream each step: dropout, torch, numpy, ``random``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        (x,), y = batch
        scale = 1 + 0.1 * (torch.rand(()) + float(np.random.rand()) + random.random())
        return ((self.net(x).squeeze(-1) - y) ** 2).mean() * scale

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _Killed(Exception):
    pass


class _KillAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise _Killed


def _fit(tmp_path: Path, num_workers: int, every: int, kill_at: int | None = None, resume: bool = False) -> dict:
    """25 steps over 10 batches an epoch: a fresh process's run (seeded, built, fitted)."""
    pl.seed_everything(0, workers=True, verbose=False)
    model = _Noisy()
    g = torch.Generator().manual_seed(1)
    data = _NoisyTensors([torch.randn(40, 4, generator=g)], torch.randn(40, generator=g))
    loader = make_loader(data, 4, shuffle=True, drop_last=True, num_workers=num_workers, seed=0)
    checkpoint = ResumableCheckpoint(tmp_path / "checkpoints", every, signals=())
    callbacks = [checkpoint] + ([_KillAt(kill_at)] if kill_at is not None else [])
    trainer = pl.Trainer(
        max_steps=25,
        max_epochs=-1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,
        callbacks=callbacks,
    )
    trainer.fit(model, train_dataloaders=loader, ckpt_path=checkpoint.path if resume else None, weights_only=True)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("every", "kill_at", "num_workers", "position"),
    [
        (4, 14, 0, {"epoch": 1, "batches": 2}),  # mid-epoch, past the first epoch
        (5, 13, 0, {"epoch": 0, "batches": 10}),  # an epoch's last batch: resumes at the next epoch's first
        (4, 14, 1, {"epoch": 1, "batches": 2}),  # a worker process fetches
    ],
)
def test_resuming_continues_the_epochs_data_order_and_random_streams_exactly(
    tmp_path, every, kill_at, num_workers, position
):
    expected = _fit(tmp_path / "whole", num_workers, every)
    with pytest.raises(_Killed):
        _fit(tmp_path / "run", num_workers, every, kill_at=kill_at)
    saved = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [position]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _fit(tmp_path / "run", num_workers, every, resume=True)
    assert not [w for w in caught if "not resumable" in str(w.message)]
    assert all(torch.isfinite(v).all() for v in expected.values())
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_the_loader_resumes_at_the_first_unused_batch_of_the_saved_epoch():
    data = TensorInputsDataset([torch.arange(20.0)[:, None]], torch.arange(20))
    loader = make_loader(data, 3, shuffle=True, drop_last=True, seed=4)
    loader.sampler.set_epoch(2)
    epoch = [y.tolist() for _, y in loader]
    assert len(epoch) == len(loader) == 6
    loader.mark_consumed(4)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 4}

    fresh = make_loader(data, 3, shuffle=True, drop_last=True, seed=4)
    fresh.load_state_dict(state)
    assert [y.tolist() for _, y in fresh] == epoch[4:]
    fresh.sampler.set_epoch(3)
    assert len([y for _, y in fresh]) == 6  # the next epoch is whole again

    fresh.load_state_dict({"epoch": 2, "batches": 6})  # all used: the next epoch from its start
    loader.sampler.set_epoch(3)
    assert [y.tolist() for _, y in fresh] == [y.tolist() for _, y in loader]


def test_what_a_dataset_draws_while_fetching_depends_only_on_seed_epoch_and_batch():
    g = torch.Generator().manual_seed(0)
    data = _NoisyTensors([torch.randn(12, 2, generator=g)], torch.arange(12))
    loader = make_loader(data, 4, shuffle=True, drop_last=True, seed=3)
    torch.manual_seed(0)
    first = [x.clone() for (x,), _ in loader]
    torch.manual_seed(1)  # other global streams: same batches, and fetching leaves them alone
    before = torch.get_rng_state()
    second = [x.clone() for (x,), _ in loader]
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    loader.sampler.set_epoch(1)
    assert not torch.equal(first[0], next(iter(loader))[0][0])


# --------------------------------------------------------------------------- checkpoints by time


class _FakeStrategy:
    def __init__(self, others: list[bool]) -> None:
        self.others, self.calls = others, []

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002
        self.calls.append(decision)
        return decision or self.others.pop(0)


def _fake_trainer(world_size: int = 1, others: list[bool] | None = None) -> SimpleNamespace:
    saves: list[int] = []
    trainer = SimpleNamespace(
        world_size=world_size,
        global_step=0,
        should_stop=False,
        train_dataloader=None,
        strategy=_FakeStrategy(others or []),
        saves=saves,
    )
    trainer.save_checkpoint = lambda path, weights_only=None: saves.append(trainer.global_step)
    return trainer


def _steps(
    callback: ResumableCheckpoint, trainer: SimpleNamespace, clock: list[float], times: list[float]
) -> list[int]:
    for t in times:
        clock[0] = t
        trainer.global_step += 1
        callback.on_train_batch_end(trainer, None, None, None, trainer.global_step - 1)
    return trainer.saves


def test_checkpoints_come_every_n_minutes_of_training_as_well_as_every_n_steps(tmp_path):
    clock = [1000.0]
    callback = ResumableCheckpoint(tmp_path, 5, every_minutes=10, signals=(), clock=lambda: clock[0])
    trainer = _fake_trainer()
    callback.on_train_start(trainer, None)  # the clock starts with training
    # steps 1..7 at these times (s after start): due at 600 s, then 600 s after that save; step 5 by steps
    saves = _steps(callback, trainer, clock, [1100, 1599, 1600, 1700, 1800, 2300, 2401])
    assert saves == [3, 5, 7]  # 600 s; every 5 steps (which restarts the clock); 600 s after step 5
    assert not trainer.should_stop and callback.preempted is None

    off = ResumableCheckpoint(tmp_path, None, every_minutes=None, signals=(), clock=lambda: clock[0])
    trainer = _fake_trainer()
    off.on_train_start(trainer, None)
    assert _steps(off, trainer, clock, [clock[0] + 10**6, clock[0] + 10**7]) == []


def test_under_ddp_every_rank_saves_when_any_rank_is_due_and_only_then_asks_whether_to_stop(tmp_path):
    clock = [0.0]
    callback = ResumableCheckpoint(tmp_path, None, every_minutes=1, signals=(), clock=lambda: clock[0])
    # step 1: no rank due (one collective); step 2: another rank is due (two: act? then stop?)
    trainer = _fake_trainer(world_size=2, others=[False, True, False])
    callback.on_train_start(trainer, None)
    assert _steps(callback, trainer, clock, [10, 20]) == [2]
    assert trainer.strategy.calls == [False, False, False] and not trainer.strategy.others
    assert not trainer.should_stop


@pytest.mark.parametrize("minutes", [0, -1, "often", True])
def test_a_bad_checkpoint_interval_is_one_line(tmp_path, minutes):
    with pytest.raises(UserError, match="pretrain.checkpoint_every_minutes must be a positive number or null"):
        ResumableCheckpoint(tmp_path, None, every_minutes=minutes)


def test_the_time_interval_defaults_to_ten_minutes_and_is_not_part_of_a_jobs_identity():
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    config = OmegaConf.to_container(compose_config([]), resolve=False)
    assert config["pretrain"]["checkpoint_every_minutes"] == 10
    other = json.loads(json.dumps(config))
    other["pretrain"]["checkpoint_every_minutes"] = None
    assert fingerprint(config) == fingerprint(other)
