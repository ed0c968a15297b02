"""Results cannot go stale or leak: a changed dataset YAML is never reported as finished, records are
portable, and running the project never rewrites a committed file."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from dabs_rq.paths import LOCAL_RESULTS_DIR, PROJECT_ROOT, default_results_dir
from dabs_rq.run import run
from tests.conftest import compose_config
from tests.test_generic_sensor import _recordings, _yamls


def _overrides(tmp_path, data_cache, mine, *extra):
    return [
        "domain=my_imu",
        "algorithm=rq",
        "model=tiny",
        "logger=none",
        "pretrain.max_steps=3",
        "pretrain.batch_size=8",
        "transfer.epochs=2",
        "transfer.mode=cached_features",
        "trainer.enable_progress_bar=false",
        "experiment_name=mine",
        f"extra_domain_dirs=[{mine}]",
        f"results_dir={tmp_path / 'results'}",
        f"output_dir={tmp_path / 'job'}",
        f"cache_dir={data_cache}",
        *extra,
    ]


def test_a_transfer_yaml_edited_after_its_record_is_refused_then_rerun_with_the_new_data(tmp_path, data_cache, caplog):
    mine = tmp_path / "mine"
    _recordings(mine)
    _yamls(mine)
    (first,) = run(compose_config(_overrides(tmp_path, data_cache, mine)))
    assert first["protocol"]["n_train"] == 81  # stride 20: 9 windows per recording
    assert first["datasets"]["transfer"]["reader"]["stride"] == 20

    _yamls(mine, stride=10)  # the user edits the transfer YAML: more, overlapping windows
    with pytest.raises(
        ValueError,
        match=r"already holds a result of another config \(datasets\.transfer\.reader\."
        r"stride: 20 -> 10\); use another experiment_name, or overwrite=true",
    ):
        run(compose_config(_overrides(tmp_path, data_cache, mine)))

    caplog.set_level(logging.INFO, logger="dabs_rq")
    caplog.clear()
    (second,) = run(compose_config(_overrides(tmp_path, data_cache, mine, "overwrite=true")))
    assert "pretraining already finished" in caplog.text  # only the transfer is redone
    assert second["protocol"]["n_train"] == 9 * 17 and second["datasets"]["transfer"]["reader"]["stride"] == 10
    assert second["dataset_fingerprint"] != first["dataset_fingerprint"]
    stored = json.loads((tmp_path / "results/records/mine/my_imu_activity/rq/seed0.json").read_text())
    assert stored["protocol"]["n_train"] == 9 * 17

    # ... and once redone it is finished again: nothing to do
    caplog.clear()
    run(compose_config(_overrides(tmp_path, data_cache, mine)))
    assert "already finished" in caplog.text


def test_a_pretraining_yaml_edited_after_pretraining_refuses_the_job_folder(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _recordings(mine)
    _yamls(mine)
    run(compose_config(_overrides(tmp_path, data_cache, mine)))
    pretrain_yaml = mine / "my_imu.yaml"
    pretrain_yaml.write_text(pretrain_yaml.read_text().replace("stride: 20", "stride: 5"))
    with pytest.raises(
        ValueError,
        match=r"holds a job with another config \(pretrain_dataset\.reader\.stride: "
        r"20 -> 5\)",
    ):
        run(compose_config(_overrides(tmp_path, data_cache, mine)))


@pytest.mark.slow
def test_records_hold_portable_paths_and_no_host_unless_asked(tmp_path, data_cache):
    mine = tmp_path / "mine"
    _recordings(mine)
    _yamls(mine)
    (record,) = run(compose_config(_overrides(tmp_path, data_cache, mine)))
    text = json.dumps(record)
    assert "host" not in record and str(tmp_path) not in text and os.path.expanduser("~") + "/" not in text
    assert record["datasets"]["transfer"]["reader"]["path"] == "<extra_domain_dirs[0]>/recordings"
    assert record["encoder_checkpoint"] == "encoder.pt" and record["git_commit"]
    (asked,) = run(
        compose_config(
            _overrides(
                tmp_path, data_cache, mine, "record.host=true", "overwrite=true", f"output_dir={tmp_path / 'job2'}"
            )
        )
    )
    assert asked["host"] == os.uname().nodename and asked["job_dir"] == str(tmp_path / "job2")
    # the same data in another folder: the same dataset fingerprint (one row in the table)
    moved = tmp_path / "moved"
    shutil.copytree(mine, moved)
    (again,) = run(
        compose_config(
            _overrides(
                tmp_path, data_cache, moved, f"output_dir={tmp_path / 'job3'}", f"results_dir={tmp_path / 'results3'}"
            )
        )
    )
    assert again["dataset_fingerprint"] == record["dataset_fingerprint"]


def test_user_runs_write_to_an_untracked_results_folder(monkeypatch):
    monkeypatch.delenv("DABS_RQ_RESULTS", raising=False)
    assert default_results_dir() == LOCAL_RESULTS_DIR
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(LOCAL_RESULTS_DIR / "records" / "x.json")], cwd=PROJECT_ROOT
    )
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0, "results/local/ must be gitignored"
    cfg = compose_config(["experiment=embedded", "domain=embedded_image"])
    assert cfg.results_dir is None
    ablation = compose_config(["experiment=ablation_bins", "domain=embedded_image"])
    assert ablation.results_dir == str(LOCAL_RESULTS_DIR / "ablations")


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_one_embedded_job_from_a_fresh_clone_leaves_git_status_clean(tmp_path, data_cache):
    """README command one's kind of run, in a fresh clone of the committed tree: records, the table, job
    folders and logs all land in untracked folders."""
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DABS_RQ_RESULTS", "DABS_RQ_DOMAINS")}
    env.update(PYTHONPATH=str(clone), DABS_RQ_CACHE=str(data_cache))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dabs_rq.cli",
            "-m",
            "experiment=embedded",
            "domain=embedded_sensor",
            "algorithm=none",
            "seed=0",
            "model=tiny",
            "transfer.epochs=1",
            "trainer.enable_progress_bar=false",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (clone / "results/local/records/embedded/embedded_watch_exercise/none/seed0.json").exists()
    assert str(clone / "results/local/table.md") in done.stdout  # the table path is printed
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", status.stdout
