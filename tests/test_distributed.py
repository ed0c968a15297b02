"""Scale-out: two-process DDP (gloo, CPU) through the submitit_local launcher equals one process;
the SLURM launcher config renders the expected sbatch parameters; sampler sharding."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from dabs_rq.data.tensor_dataset import ShardedBatchSampler
from dabs_rq.run import run
from tests.conftest import compose_config

# Deterministic pretraining (RQ in uniform/middle mode, no dropout): one process with batch 2B and
# two processes with B each (batch_scope=job splits the configured 2B) must then compute the same updates.
DETERMINISTIC = [
    "experiment=embedded",
    "domain=embedded_sensor",
    "algorithm=rq",
    "model=tiny",
    "logger=none",
    "model.dropout=0.0",
    "model.emb_dropout=0.0",
    "model.attn_dropout=0.0",
    "algorithm.module.quantizer.spacing=uniform",
    "algorithm.module.quantizer.collapse=middle",
    "pretrain.max_steps=6",
    "transfer.epochs=3",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
]


def _cli(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dabs_rq.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.integration
def test_two_process_ddp_through_submitit_local_matches_one_process(tmp_path, data_cache):
    single = compose_config(
        [
            *DETERMINISTIC,
            "pretrain.batch_size=64",
            "transfer.batch_size=256",
            f"results_dir={tmp_path / 'single'}",
            f"output_dir={tmp_path / 'single_out'}",
            f"cache_dir={data_cache}",
        ]
    )
    (one,) = run(single)

    # A cache built from scratch by the two ranks at once: the first builds each split under a file lock,
    # the other waits and reads it.
    fresh_cache = tmp_path / "fresh_cache"
    env = {**os.environ, "DABS_RQ_CACHE": str(fresh_cache)}
    # The same command but for the device count: batch_scope=job (the protocols' default) splits each batch
    # over the devices, so the effective batch and the negatives stay the protocol's.
    done = _cli(
        [
            "-m",
            *DETERMINISTIC,
            "seed=0",
            "hydra/launcher=local",
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "pretrain.batch_size=64",
            "transfer.batch_size=256",
            f"results_dir={tmp_path / 'ddp'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        env,
    )
    logs = "\n".join(p.read_text() for p in (tmp_path / "sweep").glob(".submitit/*/*_log.*"))
    assert done.returncode == 0, done.stderr[-2000:] + logs[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    built = sorted(p.relative_to(fresh_cache) for p in fresh_cache.rglob("*") if p.is_file() and p.suffix != ".lock")
    assert built and not [p for p in built if ".tmp" in p.name], built  # complete files only, no leftovers
    assert (
        sorted(
            p.relative_to(data_cache)
            for p in data_cache.rglob("*")
            if p.is_file() and p.suffix != ".lock" and p.relative_to(data_cache) in built
        )
        == built
    )
    record = json.loads((tmp_path / "ddp/records/embedded/embedded_watch_exercise/rq/seed0.json").read_text())
    assert record["pretraining"]["world_size"] == 2 and record["pretraining"]["effective_batch_size"] == 64
    assert record["pretraining"]["device_batch_size"] == 32 and record["pretraining"]["batch_scope"] == "job"
    assert record["protocol"]["world_size"] == 2 and record["pretraining"]["steps"] == 6
    assert record["protocol"]["fingerprint"] == one["protocol"]["fingerprint"]  # one cell with the 1-device run

    # Same pretrained encoder (DDP averages the gradients of the two halves of each batch) ...
    ddp_encoder = torch.load(tmp_path / "sweep/embedded_sensor/rq/seed0/encoder.pt", weights_only=True)
    one_encoder = torch.load(tmp_path / "single_out/encoder.pt", weights_only=True)
    for name, tensor in one_encoder.items():
        torch.testing.assert_close(ddp_encoder[name], tensor, atol=2e-4, rtol=1e-3, msg=name)
    # ... and the same transfer metric, over the whole test split (no sample repeated or lost): the cached
    # features were extracted with the batches split over the two ranks (trainer.predict) and gathered.
    assert record["protocol"]["transfer_mode"] == "cached_features"
    assert record["protocol"]["n_test"] == one["protocol"]["n_test"]
    assert abs(record["value"] - one["value"]) <= 1.0, (record["value"], one["value"])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sharded_batches_partition_one_big_batch_order(world):
    n, batch = 23, 2
    one = list(ShardedBatchSampler(n, batch * world, shuffle=True, drop_last=True, seed=5))
    ranks = [
        list(ShardedBatchSampler(n, batch, shuffle=True, drop_last=True, seed=5, rank=r, world_size=world))
        for r in range(world)
    ]
    assert len({len(r) for r in ranks}) == 1  # every rank takes the same number of steps
    for step, big in enumerate(one):
        assert sorted(sum((r[step] for r in ranks), [])) == sorted(big)


def test_evaluation_shards_cover_every_sample_exactly_once():
    shards = [
        list(ShardedBatchSampler(11, 2, shuffle=False, drop_last=False, rank=r, world_size=3, same_count=False))
        for r in range(3)
    ]
    seen = sorted(i for shard in shards for batch in shard for i in batch)
    assert seen == list(range(11))


def test_slurm_launcher_renders_the_expected_sbatch_parameters(tmp_path, monkeypatch):
    """hydra-submitit-launcher's own SlurmLauncher.launch maps our conf/hydra/launcher/slurm.yaml to submitit's
    SLURM executor, which writes the sbatch file and pickles the jobs; only the cluster is fake: ``srun`` and
    ``sbatch`` on PATH (sbatch keeps the file it is given and answers a job id) and the wait for results."""
    from submitit.core.utils import DelayedSubmission
    from submitit.slurm.slurm import SlurmJob

    bin_dir, submitted = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {submitted}\necho "Submitted batch job 4242"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(SlurmJob, "results", lambda job: [f"result of {job.job_id}"])

    sweep = tmp_path / "sweep"
    cfg = compose_config(
        [
            "domain=embedded_sensor",
            "hydra/launcher=slurm",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.timeout_min=600",
            "hydra.launcher.mem_gb=128",
            "hydra.launcher.cpus_per_task=8",
            "hydra.launcher.array_parallelism=16",
            f"hydra.sweep.dir={sweep}",
        ],
        return_hydra_config=True,
    )
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__module__ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher"
    launcher.setup(hydra_context=None, task_function=print, config=cfg)  # the jobs are never run here
    sweep_jobs = [[f"seed={seed}"] for seed in range(20)]
    returns = launcher.launch(sweep_jobs, initial_job_idx=0)

    assert returns == [f"result of 4242_{i}" for i in range(20)]  # one array job, one task per sweep job
    sbatch = submitted.read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --nodes=2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=128GB",
        "#SBATCH --time=600",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --array=0-19%16",
    ):
        assert line in sbatch, (line, sbatch)
    assert f"-m submitit.core._submit {sweep}/.submitit/%j" in sbatch
    jobs = [DelayedSubmission.load(sweep / ".submitit" / f"4242_{i}" / f"4242_{i}_submitted.pkl") for i in range(20)]
    assert [job.args[0] for job in jobs] == sweep_jobs and [job.args[2] for job in jobs] == list(range(20))
    assert {job._timeout_countdown for job in jobs} == {20}  # requeued (and resumed) after preemption/timeout


def test_local_launcher_runs_one_task_per_device():
    cfg = compose_config(
        ["domain=embedded_sensor", "hydra/launcher=local", "trainer.devices=2"], return_hydra_config=True
    )
    assert cfg.hydra.launcher.tasks_per_node == 2
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher")


@pytest.mark.integration
def test_ddp_in_a_multirun_with_the_basic_launcher_is_refused_with_the_fix(tmp_path):
    done = _cli(
        [
            "-m",
            "domain=embedded_sensor",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            "model=tiny",
            f"results_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        dict(os.environ),
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "hydra/launcher=local" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "env, zero",
    [
        ({}, True),
        ({"SLURM_PROCID": "3"}, False),
        ({"SLURM_PROCID": "0"}, True),
        ({"SUBMITIT_LOCAL_GLOBALID": "1"}, False),
        ({"LOCAL_RANK": "1"}, False),
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
    ],
)
def test_only_global_rank_zero_owns_job_level_side_effects(monkeypatch, env, zero):
    from dabs_rq.distributed import is_launch_rank_zero

    for var in ("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert is_launch_rank_zero() is zero


@pytest.mark.parametrize(
    "cuda, bf16, accelerator, expected",
    [
        (True, True, "auto", "bf16-mixed"),
        (True, True, "gpu", "bf16-mixed"),
        (True, False, "auto", "32-true"),
        (True, True, "cpu", "32-true"),
        (False, False, "auto", "32-true"),
    ],
)
def test_precision_auto_is_bf16_mixed_on_a_gpu_and_float32_elsewhere(monkeypatch, cuda, bf16, accelerator, expected):
    from dabs_rq.distributed import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision("auto", accelerator) == expected
    assert resolve_precision("16-mixed", accelerator) == "16-mixed"


@pytest.mark.integration
def _srun_task(args: list[str], rank: int, job_id: str, port: str, data_cache) -> subprocess.Popen:
    """Task ``rank`` of a 2-task, 1-node SLURM job as srun starts it: the command with srun's variables."""
    env = {
        **os.environ,
        "DABS_RQ_CACHE": str(data_cache),
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_NODEID": "0",
        "SLURM_NNODES": "1",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_JOB_ID": job_id,
        "SLURM_JOB_NAME": "dabs",
        "MASTER_PORT": port,
    }
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_slurm_tasks_form_one_ddp_job_from_slurm_variables_alone(tmp_path, data_cache):
    """What srun gives each task of a 2-GPU job (submitit launches exactly this): Lightning's
    SLURM environment turns the variables into ranks; only rank 0 writes the record."""
    from dabs_rq.distributed import free_port

    port = str(free_port())
    # batch_scope=device (opt-in): every device takes the whole batch of 32, so the effective batch is 64
    args = [
        sys.executable,
        "-m",
        "dabs_rq.cli",
        *DETERMINISTIC,
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "batch_scope=device",
        "pretrain.batch_size=32",
        "transfer.batch_size=128",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={tmp_path / 'job'}",
    ]
    procs = []
    for rank in (0, 1):
        procs.append(_srun_task(args, rank, "4242", port, data_cache))
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1][1] + outputs[1][0]
    assert "-> " in outputs[0][0] and "-> " not in outputs[1][0]  # the record line comes from rank 0 only
    record = json.loads((tmp_path / "results/records/embedded/embedded_watch_exercise/rq/seed0.json").read_text())
    assert record["pretraining"]["world_size"] == 2 and record["pretraining"]["effective_batch_size"] == 64
    # the opt-in is recorded, and it is another protocol: the device count is part of the fingerprint
    assert record["pretraining"]["batch_scope"] == "device" and record["pretraining"]["device_batch_size"] == 32
    assert (
        record["protocol"]["settings"]["batch_scope"] == "device" and record["protocol"]["settings"]["world_size"] == 2
    )


@pytest.mark.integration
def test_a_preempted_two_process_job_stops_together_and_resumes_from_one_checkpoint(tmp_path, data_cache):
    """SLURM signals every task; the ranks agree to stop at the same step, rank 0 saves, both exit
    with 128 + signal, and the re-submitted job resumes from that checkpoint on both ranks."""
    import signal
    import time

    from dabs_rq.distributed import free_port

    args = [
        sys.executable,
        "-m",
        "dabs_rq.cli",
        *DETERMINISTIC,
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "pretrain.batch_size=8",
        "pretrain.max_steps=150",
        "pretrain.checkpoint_every_n_steps=5",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={tmp_path / 'job'}",
    ]

    def start() -> list[subprocess.Popen]:
        port = str(free_port())
        procs = []
        for rank in (0, 1):
            procs.append(_srun_task(args, rank, "4243", port, data_cache))
        return procs

    ckpt = tmp_path / "job/checkpoints/last.ckpt"
    procs = start()
    deadline = time.time() + 300
    while not ckpt.exists():
        assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    for proc in procs:
        proc.send_signal(signal.SIGUSR1)
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [128 + signal.SIGUSR1] * 2, [o[1][-1500:] for o in outputs]
    stopped = torch.load(ckpt, weights_only=True)["global_step"]
    steps = [re.search(r"stopped by SIGUSR1 at step (\d+)", err) for _, err in outputs]
    assert all(steps) and {int(m.group(1)) for m in steps} == {stopped} and 0 < stopped < 150  # one agreed step

    procs = start()
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outputs]
    assert "resuming pretraining from" in outputs[0][0]
    record = json.loads((tmp_path / "results/records/embedded/embedded_watch_exercise/rq/seed0.json").read_text())
    assert record["pretraining"]["steps"] == 150 and record["pretraining"]["world_size"] == 2


def test_batch_scope_job_splits_the_batch_over_devices_and_refuses_an_uneven_split():
    from dabs_rq.checks import device_batch

    job = compose_config(["domain=pamap2"])
    assert job.batch_scope == "job"
    assert device_batch(job, 256, 1, "k") == 256 and device_batch(job, 256, 4, "k") == 64
    with pytest.raises(
        ValueError,
        match=r"pamap2's batch_size = 256 \(the job's effective batch\) does not divide "
        r"over 3 devices.*batch_scope=device",
    ):
        device_batch(job, 256, 3, "pamap2's batch_size")
    device = compose_config(["domain=pamap2", "batch_scope=device"])
    assert device_batch(device, 256, 3, "k") == 256
