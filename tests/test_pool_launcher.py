"""hydra/launcher=pool: jobs side by side in worker processes, each with its own fixed thread count."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from benchmarks.end_to_end import launched_workers
from dabs_rq.cores import usable_cores
from dabs_rq.paths import CONF_DIR
from hydra_plugins.dabs_rq_launcher.pool_launcher import job_overrides_for_pool, resolve_workers
from tests.conftest import compose_config
from tests.generic_helpers import run_tiny_sweep


def test_auto_workers_is_one_per_gpu_else_per_threads_of_the_usable_cores():
    assert resolve_workers("auto", 1, n_jobs=100, gpus=["0", "3"]) == 2
    assert resolve_workers("auto", 1, n_jobs=100, gpus=[]) == usable_cores()
    assert resolve_workers("auto", usable_cores() + 1, n_jobs=100, gpus=[]) == 1
    assert resolve_workers("auto", 1, n_jobs=1, gpus=[]) == 1  # never more workers than jobs
    assert resolve_workers(3, 1, n_jobs=2, gpus=[]) == 2
    assert resolve_workers("4", 2, n_jobs=10, gpus=[]) == 4


@pytest.mark.parametrize(
    "workers, threads, message",
    [(0, 1, "workers=0"), ("many", 1, "workers='many'"), ("auto", 0, "threads_per_worker=0")],
)
def test_bad_worker_settings_name_the_key(workers, threads, message):
    with pytest.raises(ValueError, match=message):
        resolve_workers(workers, threads, n_jobs=4, gpus=[])


def test_parallel_jobs_drop_progress_bars_unless_the_command_line_sets_them():
    assert job_overrides_for_pool(["seed=0"], parallel=True) == ["seed=0", "trainer.enable_progress_bar=false"]
    assert job_overrides_for_pool(["seed=0"], parallel=False) == ["seed=0"]
    kept = ["seed=0", "trainer.enable_progress_bar=true"]
    assert job_overrides_for_pool(kept, parallel=True) == kept


def test_the_embedded_default_uses_the_pool_and_the_command_line_can_replace_it():
    pool = compose_config(["experiment=embedded", "domain=embedded_sensor"], return_hydra_config=True)
    assert pool.hydra.launcher._target_.endswith("PoolLauncher") and pool.hydra.launcher.threads_per_worker == 1
    basic = compose_config(
        ["experiment=embedded", "domain=embedded_sensor", "hydra/launcher=basic"], return_hydra_config=True
    )
    assert basic.hydra.launcher._target_.endswith("BasicLauncher")


def test_the_end_to_end_benchmark_reads_the_worker_count_from_the_launch_line():
    assert launched_workers("[HYDRA] Launching 54 jobs in 2 worker process(es), 1 torch thread(s) each") == 2
    assert launched_workers("[HYDRA] Launching 54 jobs locally") == 1


def _sweep(tmp_path, data_cache, *overrides):
    return run_tiny_sweep(tmp_path, data_cache, "hydra.launcher.workers=2", *overrides)


@pytest.mark.integration
def test_a_pool_sweep_runs_every_job_once_with_one_thread_each(tmp_path, data_cache):
    done = _sweep(tmp_path, data_cache, "domain=embedded_sensor", "algorithm=none,rq", "seed=0,1")
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Launching 4 jobs in 2 worker process(es), 1 torch thread(s) each" in log
    assert all(f"[{k}/4]" in log for k in range(1, 5)) and "failed" not in log
    records = sorted((tmp_path / "results/records/embedded/embedded_watch_exercise").glob("*/seed*.json"))
    assert [p.relative_to(p.parents[1]).as_posix() for p in records] == [
        "none/seed0.json",
        "none/seed1.json",
        "rq/seed0.json",
        "rq/seed1.json",
    ]
    for path in records:
        record = json.loads(path.read_text())
        assert record["compute"]["torch_threads"] == 1
        assert "trainer.enable_progress_bar=false" in record["job_overrides"]
    assert "Results table:" in done.stdout  # rebuilt once, by the launching process, after every job


@pytest.mark.integration
def test_a_user_error_in_a_pool_job_is_one_line_and_stops_the_sweep(tmp_path, data_cache):
    # the sweep check passes (valid config); the first job fails at run time on a transfer setting
    done = _sweep(
        tmp_path,
        data_cache,
        "domain=embedded_sensor",
        "algorithm=none",
        "seed=0,1,2",
        "transfer.drop_last=true",
        "transfer.batch_size=100000",
        "hydra.launcher.workers=1",
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "dabs-rq: error:" in done.stderr and "transfer.drop_last=true" in done.stderr
    assert "Traceback" not in done.stderr
    jobs = tmp_path / "multirun/embedded_sensor/none"
    assert (jobs / "seed0").is_dir() and not (jobs / "seed1").exists() and not (jobs / "seed2").exists()


@pytest.mark.integration
def test_a_bug_in_a_pool_job_keeps_its_traceback_and_fails_the_sweep(tmp_path, data_cache):
    """The worker prints the traceback where the bug happened (it does not cross the process boundary)."""
    # the task lives in an importable module, as dabs_rq.cli.run_job does, so workers import it by name
    (tmp_path / "buggy_task.py").write_text(
        textwrap.dedent("""
        def task(cfg):
            if cfg.seed == 1:
                raise ValueError("an internal invariant broke")
    """)
    )
    (tmp_path / "buggy_app.py").write_text(
        textwrap.dedent(f"""
        import hydra
        from buggy_task import task

        if __name__ == "__main__":
            hydra.main(version_base="1.3", config_path={str(CONF_DIR)!r}, config_name="config")(task)()
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    env.update(DABS_RQ_RESULTS=str(tmp_path / "results"), DABS_RQ_CACHE=str(data_cache))
    done = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "buggy_app.py"),
            "-m",
            "experiment=embedded",
            "domain=embedded_sensor",
            "algorithm=none",
            "seed=0,1",
            "hydra.launcher.workers=2",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0
    assert "Traceback" in done.stderr and 'buggy_task.py", line 4, in task' in done.stderr
    assert "an internal invariant broke" in done.stderr
