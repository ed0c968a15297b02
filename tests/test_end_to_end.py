"""A tiny end-to-end run: pretrain -> transfer -> record -> table, in-process and through the CLI."""

import json
import os
import subprocess
import sys

import pytest

from dabs_rq.results.table import build_table
from dabs_rq.run import run
from tests.conftest import compose_config
from tests.generic_helpers import run_tiny_sweep
from tests.markdown_helpers import unpadded


def test_pretrain_transfer_record_table(tiny_run_overrides, tmp_path):
    cfg = compose_config([*tiny_run_overrides, "domain=embedded_image", "algorithm=rq"])
    records = run(cfg)
    assert [r["dataset"] for r in records] == ["embedded_mnist", "embedded_uci_digits"]
    stored = json.loads((tmp_path / "results/records/embedded/embedded_mnist/rq/seed0.json").read_text())
    for key in (
        "dataset",
        "domain",
        "algorithm",
        "seed",
        "metric",
        "value",
        "protocol",
        "pretraining",
        "config",
        "versions",
        "timings",
        "git_commit",
        "algorithm_settings",
    ):
        assert key in stored, key
    assert stored["pretraining"]["steps"] == 3 and stored["pretraining"]["batch_size"] == 64
    assert stored["protocol"]["transfer_mode"] == "cached_features"
    assert stored["algorithm_settings"]["views"] == "clean_vs_rq"
    assert 0 <= stored["value"] <= 100
    assert (tmp_path / "out" / "encoder.pt").exists()
    md = build_table([tmp_path / "results"])["md"].read_text()
    assert "MNIST-5k digits" in md and "UCI digits" in md


def test_online_transfer_mode_runs_the_encoder_in_the_loop(tiny_run_overrides, tmp_path):
    cfg = compose_config(
        [*tiny_run_overrides, "domain=embedded_sensor", "algorithm=none", "transfer.mode=online", "transfer.epochs=1"]
    )
    (record,) = run(cfg)
    assert record["protocol"]["transfer_mode"] == "online" and record["pretraining"]["steps"] == 0


@pytest.mark.integration
def test_multirun_cli_sweeps_algorithms_and_rebuilds_the_table(tmp_path, data_cache):
    results = tmp_path / "results"
    done = run_tiny_sweep(
        tmp_path,
        data_cache,
        "domain=embedded_sensor",
        "algorithm=none,emix",
        "seed=0",
        "trainer.enable_progress_bar=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Results table:" in done.stdout
    for algorithm in ("none", "emix"):
        assert (results / f"records/embedded/embedded_watch_exercise/{algorithm}/seed0.json").exists()
    md = unpadded(results / "table.md")
    header = next(line for line in md.splitlines() if line.startswith("| Domain |"))
    assert "| none | emix |" in header.replace("Metric | ", "")
    record = json.loads((results / "records/embedded/embedded_watch_exercise/none/seed0.json").read_text())
    assert (
        record["command"].startswith("dabs-rq -m experiment=embedded ")
        and " domain=embedded_sensor " in record["command"]
    )
    assert "algorithm=none" in record["job_overrides"]
    assert "Produced by:\n- `dabs-rq -m experiment=embedded" in md


@pytest.mark.integration
def test_bad_domain_on_the_command_line_is_one_clear_line(tmp_path):
    env = {**os.environ, "DABS_RQ_RESULTS": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "dabs_rq.cli", "domain=nope", f"hydra.run.dir={tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "unknown domain/dataset 'nope'; valid:" in done.stderr and "Traceback" not in done.stderr


import pytest  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize(
    "algorithm, domain",
    [("shed", "embedded_sensor"), ("mae", "embedded_text"), ("rq_emix", "embedded_sensor"), ("mae", "embedded_image")],
)
def test_beyond_the_paper_algorithms_smoke_run(tiny_run_overrides, tmp_path, algorithm, domain):
    records = run(compose_config([*tiny_run_overrides, f"domain={domain}", f"algorithm={algorithm}"]))
    assert records and all(r["algorithm"] == algorithm and r["pretraining"]["steps"] == 3 for r in records)
    assert all(0 <= r["value"] <= 100 for r in records)
