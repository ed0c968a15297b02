"""RQ ablations as ready-made sweeps: each composes with its swept values, runs on the embedded
default through the public command, and is summarised as metric vs setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config
from tests.markdown_helpers import unpadded

ABLATIONS = {
    "ablation_bins": ("num_bins", "2,4,8,16,32"),
    "ablation_statistics": ("statistics", "channel,instance"),
    "ablation_collapse": ("collapse", "inside_random,middle,all_zeros"),
    "ablation_spacing": ("spacing", "random,uniform"),
    "ablation_p": ("p", "0.25,0.5,0.75,1.0"),
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_each_ablation_sweeps_its_setting_on_the_embedded_default(name):
    setting, values = ABLATIONS[name]
    cfg = compose_config([f"experiment={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert str(params[f"algorithm.module.quantizer.{setting}"]) == values and params.algorithm == "rq"
    assert cfg.ablation.name == name and cfg.ablation.setting == setting
    assert cfg.model.dim == compose_config(["experiment=embedded"]).model.dim  # the embedded default's encoder
    assert "ablations" in cfg.results_dir  # kept out of the main table
    subdir = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]
    assert f"{setting}=" in subdir  # one job folder per value


@pytest.mark.integration
def test_an_ablation_runs_through_the_public_command_and_is_summarised(tmp_path, data_cache):
    results = tmp_path / "results"
    env = {**os.environ, "DABS_RQ_RESULTS": str(results), "DABS_RQ_CACHE": str(data_cache)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dabs_rq.cli",
            "-m",
            "experiment=ablation_statistics",
            "domain=embedded_sensor",
            "model=tiny",
            "logger=none",
            "pretrain.max_steps=3",
            "transfer.epochs=2",
            "seed=0",
            "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = results / "ablations" / "ablation_statistics.md"
    assert "Ablation summary:" in done.stdout and summary.exists()
    lines = unpadded(summary).splitlines()
    assert lines[2].startswith("Protocol `smoke` (fingerprint `")  # one table per protocol
    header = lines.index(next(line for line in lines if line.startswith("| Domain")))
    assert "statistics=channel | statistics=instance" in lines[header]
    assert "Watch exercise" in lines[header + 2] and lines[header + 2].count("(1)") == 2
    assert not (results / "table.md").exists()  # the main table is not mixed with ablation runs
    before = summary.read_bytes()
    again = subprocess.run(
        [sys.executable, "-m", "dabs_rq.cli", "ablation", "ablation_statistics"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert summary.read_bytes() == before and (results / "ablations" / "ablation_statistics.png").exists()


@pytest.mark.integration
def test_the_ablation_command_names_the_valid_ablations(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "dabs_rq.cli", "ablation", "ablation_colour"],
        env={**os.environ, "DABS_RQ_RESULTS": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "unknown ablation 'ablation_colour'; valid: ablation_bins, ablation_collapse, ablation_p" in done.stderr


def test_an_ablation_summary_keeps_protocols_apart(tmp_path):
    """Records of one ablation under two protocols (e.g. smoke and dabs) are two tables, never averaged."""
    from dabs_rq.io import write_json_atomic
    from dabs_rq.results.ablation import build_ablation

    for protocol, fingerprint, value in (("smoke", "aaaa1111", 80.0), ("dabs", "bbbb2222", 60.0)):
        for seed in (0, 1):
            write_json_atomic(
                tmp_path / "records/ablation_bins" / protocol / f"seed{seed}.json",
                {
                    "domain": "Images",
                    "dataset": "mnist",
                    "display_name": "MNIST",
                    "metric": "accuracy",
                    "algorithm": "rq",
                    "algorithm_settings": {"num_bins": 8},
                    "seed": seed,
                    "value": value + seed,
                    "protocol": {"name": protocol, "fingerprint": fingerprint},
                },
            )
    md = unpadded(build_ablation(tmp_path, "ablation_bins", "num_bins")["md"])
    assert "Protocol `dabs` (fingerprint `bbbb2222`)" in md and "Protocol `smoke` (fingerprint `aaaa1111`)" in md
    assert "| Images | MNIST | accuracy | 60.50 ± 0.71 [54.15, 66.85] (2) |" in md  # mean ± std [95 % CI] (seeds)
    assert "| Images | MNIST | accuracy | 80.50 ± 0.71 [74.15, 86.85] (2) |" in md


def test_an_ablation_summary_reports_records_without_the_setting_and_unreadable_ones(tmp_path, capsys):
    """Both are skipped with their path named; the others are summarised (integer values stay integers)."""
    from dabs_rq.io import write_json_atomic
    from dabs_rq.results.ablation import build_ablation

    base = {"domain": "Images", "dataset": "mnist", "metric": "accuracy", "algorithm": "rq", "seed": 0, "value": 1.0}
    write_json_atomic(tmp_path / "records/ablation_bins/a/seed0.json", {**base, "algorithm_settings": {"num_bins": 4}})
    write_json_atomic(tmp_path / "records/ablation_bins/b/seed0.json", {**base, "algorithm_settings": {"p": 0.5}})
    (tmp_path / "records/ablation_bins/c/seed0.json").parent.mkdir(parents=True)
    (tmp_path / "records/ablation_bins/c/seed0.json").write_text('{"dataset": "mni')
    md = unpadded(build_ablation(tmp_path, "ablation_bins", "num_bins")["md"])
    out = capsys.readouterr().out
    assert "b/seed0.json: its algorithm_settings have no 'num_bins'" in out and "c/seed0.json" in out
    assert "| Domain | Dataset | Metric | num_bins=4 |" in md and "| Images | mnist | accuracy | 1.00 (1) |" in md
