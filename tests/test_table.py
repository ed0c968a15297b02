"""Table regeneration from fixture records: aggregation, paper numbers, determinism, bad records."""

import json

import pandas as pd
import pytest

from dabs_rq.cli import table_main
from dabs_rq.io import write_json_atomic
from dabs_rq.results.records import record_path
from dabs_rq.results.table import build_table
from tests.markdown_helpers import unpadded


def write(results, dataset, algorithm, seed, value, domain="Images", paper_name=None, display=None, synthetic=False):
    record = {
        "dataset": dataset,
        "display_name": display or dataset,
        "domain": domain,
        "algorithm": algorithm,
        "seed": seed,
        "metric": "accuracy",
        "value": value,
        "paper_name": paper_name,
        "synthetic": synthetic,
    }
    write_json_atomic(record_path(results, "exp", dataset, algorithm, seed), record)


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    for seed, (n, e, r) in enumerate([(20.0, 40.0, 45.0), (22.0, 42.0, 49.0), (24.0, 44.0, 47.0)]):
        write(root, "cifar10", "none", seed, n, paper_name="CIFAR-10", display="CIFAR-10")
        write(root, "cifar10", "emix", seed, e, paper_name="CIFAR-10", display="CIFAR-10")
        write(root, "cifar10", "rq", seed, r, paper_name="CIFAR-10", display="CIFAR-10")
    write(root, "dtd", "rq", 0, 10.0, paper_name="DTD (Textures)", display="DTD")
    write(root, "toy_speech", "shed", 0, 55.0, domain="Speech", synthetic=True)
    return root


def test_aggregates_mean_std_seeds_paper_and_delta(results):
    paths = build_table([results])
    tidy = pd.read_csv(paths["csv"])
    rq = tidy[(tidy.dataset == "cifar10") & (tidy.algorithm == "rq")].iloc[0]
    assert rq["mean"] == pytest.approx(47.0) and rq["std"] == pytest.approx(2.0) and rq["n"] == 3
    assert rq["paper"] == pytest.approx(47.70) and rq["delta"] == pytest.approx(-0.70)
    md = unpadded(paths["md"])
    # ours (mean ± std [95 % t-interval] (seeds), then the marks: better / worse than none (n) or emix (e) after
    # Holm's correction) for none / emix / rq, empty shed, then the paper's None / e-Mix / RQ and deltas
    assert (
        "| Images | CIFAR-10 | accuracy | 22.00 ± 2.00 [17.03, 26.97] (3) ▼e | 42.00 ± 2.00 [37.03, 46.97] (3) ▲n "
        "| 47.00 ± 2.00 [42.03, 51.97] (3) ▲n▲e |  | 24.20 | 39.43 | 47.70 | -2.20 | +2.57 | -0.70 |"
    ) in md
    header = next(line for line in md.splitlines() if line.startswith("| Domain |"))
    assert "shed" in header  # any algorithm in the records becomes a column
    assert "toy_speech (synthetic)" in md
    assert "**domain mean**" in md
    assert paths["png"].stat().st_size > 10_000


def test_tables_are_aligned_markdown(results):
    """Tables come from DataFrame.to_markdown (GitHub style): each table's lines are padded to one width."""
    lines = build_table([results])["md"].read_text(encoding="utf-8").splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert table[1].startswith("|---") and len({len(line) for line in table}) == 1


def test_domain_mean_is_the_mean_over_datasets(results):
    md = unpadded(build_table([results])["md"])
    images_mean = [line for line in md.splitlines() if line.startswith("| **Images**")][0]
    assert "**28.50**" in images_mean  # rq: mean of 47.0 (cifar10) and 10.0 (dtd)


def test_rebuilding_without_new_records_is_byte_identical(results):
    first = {k: p.read_bytes() for k, p in build_table([results]).items()}
    second = {k: p.read_bytes() for k, p in build_table([results]).items()}
    assert first == second


def test_corrupt_and_partial_records_are_skipped_and_reported(results, capsys):
    bad = results / "records" / "exp" / "broken" / "rq" / "seed0.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"dataset": "broken", "val')
    partial = results / "records" / "exp" / "partial" / "rq" / "seed0.json"
    partial.parent.mkdir(parents=True)
    partial.write_text(json.dumps({"dataset": "partial"}))
    paths = build_table([results])
    err = capsys.readouterr().err
    assert "broken" in err and "partial" in err and "missing fields" in err
    assert "broken" not in paths["md"].read_text()


def test_table_command_aggregates_several_folders_and_fails_cleanly_on_none(tmp_path, results, capsys):
    other = tmp_path / "other"
    write(other, "gtsrb", "rq", 0, 80.0, paper_name="GTSRB (Traffic)", display="GTSRB")
    out = tmp_path / "combined"
    assert table_main([str(results), str(other), "--out", str(out)]) == 0
    assert "GTSRB" in (out / "table.md").read_text() and "CIFAR-10" in (out / "table.md").read_text()
    assert table_main([str(tmp_path / "empty")]) == 2
    assert "no result records" in capsys.readouterr().err


def test_commands_that_produced_the_records_are_listed_and_readme_block_is_replaced(results, tmp_path):
    path = record_path(results, "exp", "dtd", "rq", 0)
    record = json.loads(path.read_text())
    write_json_atomic(path, {**record, "command": "dabs-rq -m experiment=embedded"})
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- TABLE START -->\nold table\n<!-- TABLE END -->\noutro\n")
    assert table_main([str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("<!-- TABLE END -->\noutro\n")
    assert "Produced by:\n- `dabs-rq -m experiment=embedded`" in text
    readme.write_text("no markers")
    assert table_main([str(results), "--readme", str(readme)]) == 2
