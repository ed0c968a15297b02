"""The pretraining-step benchmark at the DABS protocol, on a CPU with ``--quick``: the code path the GPU run
takes (real-format fixture, the job's config, loader, encoder, algorithm, step), and a JSON that
``dabs-rq plan`` reads its throughputs from. Its numbers are not measurements of anything."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import pretrain_step
from dabs_rq.bench import main
from dabs_rq.plan import Bench, make_plan

SHARES = ("data wait %", "augmentation %", "forward %", "backward %", "optimizer %")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> dict:
    """``dabs-rq bench --only pretrain_step --device cpu --quick --protocol dabs`` for wikitext103 (none, rq)."""
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pretrain_step, "DABS_DOMAINS", ("wikitext103",))
        patch.setattr(pretrain_step, "DABS_ALGORITHMS", ("none", "rq"))
        assert (
            main(["--only", "pretrain_step", "--device", "cpu", "--quick", "--protocol", "dabs", "--out", str(out)])
            == 0
        )
    (path,) = out.glob("pretrain_step-*.json")
    return {"path": path, "data": json.loads(path.read_text())}


def test_the_quick_cpu_run_writes_one_row_per_algorithm_in_the_plans_format(quick_run):
    data = quick_run["data"]
    assert quick_run["path"].name == "pretrain_step-dabs-cpu-quick.json"  # not the CPU default protocol (smoke)
    assert data["protocol"] == "dabs" and data["quick"] and "card" not in data  # a card only on CUDA
    rows = {r["algorithm"]: r for r in data["rows"]}
    assert set(rows) == {"none", "rq"} and not any("error" in r for r in data["rows"])
    for row in rows.values():
        assert (row["protocol"], row["domain"], row["batch"], row["tokens"]) == ("dabs", "wikitext103", 16, 129)
        assert row["samples_per_s"] > 0 and row["step_ms"] > 0 and row["first_step_s"] > 0
        assert row["compile"] == "false" and row["compiled"] is False and row["compile_s"] is None  # auto = eager here
        assert row["precision"] == "32-true" and row["workers"] == 0 and row["speedup"] == 1.0
        assert sum(row[s] for s in SHARES) == pytest.approx(100, abs=0.1)
    assert rows["none"]["backward %"] == 0 and rows["rq"]["backward %"] > 0 and rows["rq"]["augmentation %"] > 0
    assert "RQ" in rows["rq"]["target"]


def test_plan_reads_measured_throughputs_from_it(quick_run, tmp_path):
    data = quick_run["data"]
    data.update(card="Fake GPU 80GB", quick=False)  # as if a full GPU run had written it
    data["machine"].update(device="cuda", gpu="Fake GPU 80GB")
    (tmp_path / "pretrain_step-cuda.json").write_text(json.dumps(data))
    bench = Bench.find(tmp_path, None, None)
    assert bench.card == "Fake GPU 80GB"
    rows = {r["algorithm"]: r["samples_per_s"] for r in data["rows"]}
    step = bench.pretrain("wikitext103", "rq", 129, "bf16-mixed", False, "dabs")
    forward = bench.forward("wikitext103", 129, "bf16-mixed", False, "dabs")
    assert step.measured and step.samples_per_s == rows["rq"] and "row wikitext103 / rq (eager)" in step.source
    assert forward.measured and forward.samples_per_s == rows["none"]
    planned = make_plan(["domain=wikitext103", "algorithm=rq", "protocol=dabs"], bench)["jobs"][0]
    assert planned["pretrain_throughput"]["measured"] and planned["pretrain_throughput"]["samples_per_s"] == rows["rq"]
    assert planned["pretrain_gpu_hours"] == pytest.approx(100_000 * 128 / rows["rq"] / 3600)


def test_rows_a_time_budget_leaves_no_time_for_are_marked_skipped():
    rows = pretrain_step.run_dabs(torch.device("cpu"), True, ("imagenet",), ("none", "rq"), budget_s=1e-6)
    assert [(r["algorithm"], r["compile"]) for r in rows] == [("none", "false"), ("rq", "false")]
    assert all(r["error"].startswith("skipped:") and "samples_per_s" not in r for r in rows)


def test_on_cuda_eager_and_auto_run_side_by_side():
    jobs = pretrain_step._jobs(torch.device("cuda"), ("none", "rq"))
    assert jobs == [("none", "false"), ("none", "auto"), ("rq", "false"), ("rq", "auto")]
    assert pretrain_step._jobs(torch.device("cpu"), ("rq",)) == [("rq", "false")]  # auto is eager there
