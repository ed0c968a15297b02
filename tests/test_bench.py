"""The benchmark runner's bookkeeping (not timings): summaries, README block, stage split."""

import json

from benchmarks.end_to_end import stage_split
from dabs_rq.bench import main, summary_markdown


def write_result(folder, name="rq", device="cpu"):
    payload = {
        "benchmark": name,
        "title": "RQ operator",
        "quick": False,
        "created": "2026-11-25T00:00:00+00:00",
        "machine": {"device": device, "torch": "2.11.0", "cpus": 2, "torch_threads": 2, "cpu_model": "Test CPU"},
        "rows": [
            {"shape": "(2, 3)", "ours_ms": 1.0, "ref_ms": 40.0, "ref/ours": 40.0, "target": ">= 30x", "met": True}
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-{device}.json").write_text(json.dumps(payload))


def test_summary_names_the_machine_and_tabulates_rows(tmp_path):
    write_result(tmp_path)
    text = summary_markdown(tmp_path)
    assert "## RQ operator — cpu" in text and "Machine: Test CPU, 2 CPUs, 2 torch threads; torch 2.11.0" in text
    assert "| shape" in text and "True" in text


def test_summary_only_refreshes_readme_block(tmp_path):
    write_result(tmp_path)
    readme = tmp_path / "README.md.in"
    readme.write_text("x\n<!-- BENCH START -->\nold\n<!-- BENCH END -->\n")
    assert main(["--summary-only", "--out", str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and "### RQ operator — cpu" in text
    assert (tmp_path / "README.md").exists()


def test_summary_keeps_the_benchmark_column_order_and_whole_numbers(tmp_path):
    write_result(tmp_path)
    path = tmp_path / "rq-cpu.json"
    payload = json.loads(path.read_text())
    payload["columns"] = ["shape", "ref/ours", "ours_ms", "ref_ms", "target", "met"]
    payload["rows"].append({"shape": "(4, 3)", "ref/ours": None, "ours_ms": 1234.0})  # gaps make a float column
    payload["rows"][0]["ours_ms"] = 2345.0
    path.write_text(json.dumps(payload, sort_keys=True))
    header = next(line for line in summary_markdown(tmp_path).splitlines() if line.startswith("| shape"))
    assert [c.strip() for c in header.strip("|").split("|")] == payload["columns"]
    assert "2345" in summary_markdown(tmp_path) and "e+03" not in summary_markdown(tmp_path)


def test_end_to_end_split_counts_each_pretraining_once():
    records = [
        {
            "pretrain_dataset": "img",
            "algorithm": "rq",
            "seed": 0,
            "domain": "Images",
            "timings": {"pretrain_s": 10.0, "transfer_s": 1.0},
        },
        {
            "pretrain_dataset": "img",
            "algorithm": "rq",
            "seed": 0,
            "domain": "Images",
            "timings": {"pretrain_s": 10.0, "transfer_s": 2.0},
        },
        {
            "pretrain_dataset": "img",
            "algorithm": "none",
            "seed": 0,
            "domain": "Images",
            "timings": {"pretrain_s": 0.0, "transfer_s": 1.0},
        },
    ]
    assert stage_split(records) == {"pretrain img": 10.0, "transfer Images": 4.0}
