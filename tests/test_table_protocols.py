"""The table never mixes protocols: sections per (experiment, protocol fingerprint), algorithm and dataset
variants as separate columns / rows, commits in the notes, the VQA caveat with the DABS 2.0 numbers, the
paper-protocol reference table, legacy records, determinism."""

import hashlib
import json

import pandas as pd
import pytest

from dabs_rq.cli import table_main
from dabs_rq.io import write_json_atomic
from dabs_rq.results.records import record_path
from dabs_rq.results.table import build_table
from tests.markdown_helpers import unpadded

DABS = {
    "model.dim": 256,
    "model.depth": 12,
    "pretrain.max_steps": 100000,
    "pretrain.batch_size": 64,
    "transfer.mode": "online",
    "transfer.epochs": 100,
    "transfer.drop_last": True,
}
SMOKE = {**DABS, "model.dim": 64, "model.depth": 2, "pretrain.max_steps": 300, "transfer.mode": "cached_features"}
RQ = {"num_bins": 16, "p": 0.5}
COLA = {"pretrain": {"name": "wikitext103", "batch_size": 128}, "transfer": {"name": "glue_cola", "batch_size": 128}}
COMMIT = "a" * 40


def fingerprint(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def write(
    results,
    dataset,
    algorithm,
    seed,
    value,
    *,
    experiment="exp",
    protocol="dabs",
    settings=DABS,
    algorithm_settings=RQ,
    datasets=COLA,
    domain="English Text",
    display=None,
    paper_name=None,
    metric="accuracy",
    commit=COMMIT,
):
    """A schema-2 record as the runner writes it (the fingerprints hash the settings, as the runner's do)."""
    record = {
        "schema": 2,
        "experiment": experiment,
        "dataset": dataset,
        "display_name": display or dataset,
        "paper_name": paper_name,
        "domain": domain,
        "algorithm": algorithm,
        "seed": seed,
        "metric": metric,
        "value": value,
        "synthetic": False,
        "command": f"dabs-rq experiment={experiment}",
        "git_commit": commit,
        "protocol": {
            "name": protocol,
            "fingerprint": fingerprint(settings),
            "settings": settings,
            "n_train": 100,
            "n_test": 50 + seed,
        },  # per-run details: not part of the key
        "algorithm_settings": algorithm_settings,
        "algorithm_fingerprint": fingerprint(algorithm_settings),
        "datasets": datasets,
        "dataset_fingerprint": fingerprint(datasets),
    }
    path = record_path(results, experiment, dataset, algorithm, seed)
    if protocol != "dabs" or settings is not DABS:  # keep different protocols' records apart on disk
        path = path.with_name(f"{protocol}-{fingerprint(settings)}-{path.name}")
    write_json_atomic(path, record)


def table_lines(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("| ")]


def section(md: str, contains: str) -> str:
    """The Markdown section (### heading to the next) whose heading contains ``contains``."""
    parts = md.split("\n### ")
    (found,) = [p for p in parts if contains in p.splitlines()[0]]
    return found


def test_two_protocols_of_one_dataset_and_algorithm_are_never_averaged(tmp_path):
    results = tmp_path / "results"
    for seed, value in enumerate([40.0, 42.0]):
        write(results, "cola", "rq", seed, value)
    for seed, value in enumerate([10.0, 12.0]):
        write(results, "cola", "rq", seed, value, protocol="smoke", settings=SMOKE)
    paths = build_table([results])
    md = unpadded(paths["md"])
    dabs, smoke = section(md, "protocol `dabs`"), section(md, "protocol `smoke`")
    assert f"fingerprint `{fingerprint(DABS)}`" in dabs.splitlines()[0] and "Experiment `exp`" in dabs.splitlines()[0]
    assert "Settings: model.dim=256, model.depth=12, pretrain.max_steps=100000" in dabs
    assert "| English Text | cola | accuracy | 41.00 ± 1.41 [28.29, 53.71] (2) |" in dabs and "11.00" not in dabs
    assert "| English Text | cola | accuracy | 11.00 ± 1.41 [-1.71, 23.71] (2) |" in smoke and "41.00" not in smoke
    assert "26.00" not in md  # the mixed mean
    tidy = pd.read_csv(paths["csv"])
    assert set(tidy["protocol"]) == {"dabs", "smoke"} and list(tidy["n"]) == [2, 2]
    assert {"experiment", "protocol", "protocol_fingerprint", "algorithm_fingerprint", "dataset_fingerprint"} <= set(
        tidy.columns
    )
    assert set(tidy["protocol_fingerprint"]) == {fingerprint(DABS), fingerprint(SMOKE)}


def test_same_protocol_name_with_other_settings_or_experiment_is_its_own_section_saying_what_differs(tmp_path):
    results = tmp_path / "results"
    big_batch = {**DABS, "pretrain.batch_size": 256}
    write(results, "cola", "rq", 0, 40.0)
    write(results, "cola", "rq", 0, 30.0, settings=big_batch)
    write(results, "cola", "rq", 0, 20.0, experiment="other")
    md = unpadded(build_table([results])["md"])
    assert md.count("\n### ") + md.startswith("### ") == 3
    small = section(md, f"`exp` · protocol `dabs` · fingerprint `{fingerprint(DABS)}`")
    big = section(md, fingerprint(big_batch))
    assert "in: pretrain.batch_size=64." in small and "in: pretrain.batch_size=256." in big
    assert "40.00 (1)" in small and "30.00 (1)" in big and "20.00 (1)" in section(md, "`other`")
    assert "30.00" not in small and "20.00" not in small and "35.00" not in md and "30.00 ± " not in md


def test_same_protocol_other_algorithm_settings_are_separate_columns_with_a_note(tmp_path):
    results = tmp_path / "results"
    more_bins = {**RQ, "num_bins": 32}
    for seed in range(3):
        write(results, "cola", "rq", seed, 40.0 + seed)
    path = record_path(results, "exp", "cola", "rq", 0)
    write_json_atomic(
        path.with_name("bins32.json"),
        {
            **json.loads(path.read_text()),
            "value": 10.0,
            "algorithm_settings": more_bins,
            "algorithm_fingerprint": fingerprint(more_bins),
        },
    )
    md = unpadded(build_table([results])["md"])
    short = fingerprint(more_bins)[:4]
    header = next(line for line in table_lines(md) if line.startswith("| Domain"))
    assert f"| rq | rq [{short}] |" in header
    assert "| English Text | cola | accuracy | 41.00 ± 1.00 [38.52, 43.48] (3) | 10.00 (1) |" in md
    assert f"`rq [{short}]`: algorithm fingerprint `{fingerprint(more_bins)}`" in md
    assert "differs in num_bins=32 (rq: 16)." in md


def test_same_dataset_with_other_dataset_settings_is_a_separate_row_with_a_note(tmp_path):
    results = tmp_path / "results"
    smaller = {**COLA, "transfer": {**COLA["transfer"], "batch_size": 64}}
    for seed in range(2):
        write(results, "cola", "rq", seed, 40.0 + 2 * seed, display="CoLA")
    write(results, "cola", "none", 0, 5.0, display="CoLA")
    write_json_atomic(
        record_path(results, "exp", "cola", "rq", 7).with_name("bs64.json"),
        {
            **json.loads(record_path(results, "exp", "cola", "rq", 0).read_text()),
            "seed": 7,
            "value": 20.0,
            "datasets": smaller,
            "dataset_fingerprint": fingerprint(smaller),
        },
    )
    md = unpadded(build_table([results])["md"])
    short = fingerprint(smaller)[:4]
    assert "| English Text | CoLA | accuracy | 5.00 (1) | 41.00 ± 1.41 [28.29, 53.71] (2) |" in md  # n = 1: no test
    assert f"| English Text | CoLA [ds {short}] | accuracy |  | 20.00 (1) |" in md
    assert f"`CoLA [ds {short}]`: dataset fingerprint `{fingerprint(smaller)}`" in md
    assert "differs in transfer.batch_size=64 (CoLA: 128)." in md
    assert "| **English Text** | **domain mean** |  | **5.00** | **41.00** |" in md  # over the unmarked rows


def test_notes_list_the_commits_with_counts_and_mark_uncommitted_ones(tmp_path):
    results = tmp_path / "results"
    write(results, "cola", "rq", 0, 40.0)
    write(results, "cola", "rq", 1, 41.0)
    write(results, "cola", "none", 0, 5.0, commit="b" * 40 + "-dirty")
    write(results, "cola", "none", 1, 6.0, commit=None)
    md = unpadded(build_table([results])["md"])
    (notes,) = [line for line in md.splitlines() if line.startswith("- Commits behind these numbers")]
    assert f"`{'a' * 12}` (2 records)" in notes
    assert f"`{'b' * 12}-dirty` (1 record, uncommitted changes)" in notes
    assert "unknown commit (1 record)" in notes
    assert notes.count("uncommitted changes") == 1


def test_vqa_is_marked_not_comparable_without_delta_and_shows_the_dabs2_readme_numbers(tmp_path):
    results = tmp_path / "results"
    for algorithm, value in (("none", 50.0), ("emix", 55.0), ("rq", 56.0)):
        write(results, "vqa", algorithm, 0, value, domain="Vision/Language", display="VQA", paper_name="VQA")
        write(results, "cifar10", algorithm, 0, value - 10, domain="Images", display="CIFAR-10", paper_name="CIFAR-10")
    paths = build_table([results])
    md = unpadded(paths["md"])
    header = next(line for line in table_lines(md) if line.startswith("| Domain"))
    assert header.endswith(
        "| paper none | paper emix | paper rq | Δ none | Δ emix | Δ rq | DABS 2.0 README none "
        "| DABS 2.0 README emix | DABS 2.0 README shed |"
    )
    assert (
        "| Vision/Language | VQA (not comparable: paper used the pre-fix DABS captioned-images code) | accuracy "
        "| 50.00 (1) | 55.00 (1) | 56.00 (1) | 57.50 | 48.90 | 54.40 |  |  |  | 53.38 | 58.77 | 54.25 |"
    ) in md
    # an ordinary DABS row keeps its delta; the DABS 2.0 README numbers (1.0 protocol, with ShED) sit beside it
    assert (
        "| Images | CIFAR-10 | accuracy | 40.00 (1) | 45.00 (1) | 46.00 (1) | 24.20 | 39.43 | 47.70 | +15.80 "
        "| +5.57 | -1.70 | 24.20 | 39.43 | 39.63 |" in md
    )
    assert "DABS README (v2.0" in md
    tidy = pd.read_csv(paths["csv"]).set_index(["dataset", "algorithm"])
    assert pd.isna(tidy.loc[("vqa", "rq"), "delta"]) and tidy.loc[("vqa", "rq"), "paper_note"].startswith("not comp")
    assert tidy.loc[("vqa", "emix"), "dabs2_readme"] == pytest.approx(58.77)
    assert tidy.loc[("cifar10", "rq"), "delta"] == pytest.approx(-1.70)


def test_reference_lists_all_34_paper_rows_with_our_cells_of_the_paper_protocol(tmp_path, capsys):
    results = tmp_path / "results"
    for seed, value in enumerate([40.0, 42.0]):
        write(results, "cifar10", "rq", seed, value, domain="Images", display="CIFAR-10", paper_name="CIFAR-10")
        write(
            results,
            "cifar10",
            "rq",
            seed,
            90.0,
            domain="Images",
            display="CIFAR-10",
            paper_name="CIFAR-10",
            protocol="smoke",
            settings=SMOKE,
        )
    write(results, "vqa", "shed", 0, 51.0, domain="Vision/Language", display="VQA", paper_name="VQA")
    assert table_main([str(results), "--reference"]) == 0
    assert f"Paper Table 1 with our cells: {results / 'table_reference.md'}" in capsys.readouterr().out
    text = unpadded(results / "table_reference.md")
    header = next(line for line in table_lines(text) if line.startswith("| Domain"))
    assert header == (
        "| Domain | Dataset | Metric | paper none | paper emix | paper rq | ours none | ours emix | "
        "ours rq | ours shed | DABS 2.0 README none | DABS 2.0 README emix | DABS 2.0 README shed |"
    )
    rows = [line for line in table_lines(text) if not line.startswith(("| Domain", "|---", "| **"))]
    paper = pd.read_csv("results/reference/paper_table1.csv")
    assert len(rows) == 34 == len(paper)
    names = [r.split(" | ")[1] for r in rows]
    assert all(
        shown == name or shown.startswith(f"{name} (not comparable") for shown, name in zip(names, paper["dataset"])
    )
    assert "| Images | CIFAR-10 | Accuracy | 24.20 | 39.43 | 47.70 |  |  | 41.00 ± 1.41 [28.29, 53.71] (2) |  |" in text
    assert "| Images | Birds | Accuracy | 1.62 | 3.86 | 4.16 |  |  |  |  | 1.62 | 3.86 | 2.95 |" in text
    assert "| English Text | MRPC | Accuracy | 68.40 | 66.20 | 68.90 |  |  |  |  |  |  |  |" in text  # not in it
    assert (
        "| Vision/Language | VQA (not comparable: paper used the pre-fix DABS captioned-images code) | Accuracy "
        "| 57.50 | 48.90 | 54.40 |  |  |  | 51.00 (1) | 53.38 | 58.77 | 54.25 |"
    ) in text
    assert "| **Images** | **domain mean** |  | **9.88** | **25.55** | **32.06** |  |  | 1/6 run |  |" in text
    assert "90.00" not in text  # the smoke protocol's records are not in the paper-protocol table
    assert "protocol `smoke`" in (results / "table.md").read_text()
    assert "`dabs`" in text.split("\n## ")[0]  # says which records qualify


def test_reference_without_paper_protocol_records_is_the_bare_paper_table(tmp_path):
    results = tmp_path / "results"
    write(results, "cifar10", "rq", 0, 90.0, domain="Images", paper_name="CIFAR-10", protocol="smoke", settings=SMOKE)
    text = unpadded(build_table([results], reference=True)["reference"])
    assert "## No records of protocol `dabs` yet" in text
    assert len([line for line in table_lines(text) if not line.startswith(("| Domain", "|---", "| **"))]) == 34
    assert "90.00" not in text


def test_legacy_records_load_as_protocol_unrecorded(tmp_path):
    results = tmp_path / "results"
    base = {
        "dataset": "mnist",
        "display_name": "MNIST",
        "domain": "Images",
        "metric": "accuracy",
        "seed": 0,
        "paper_name": None,
        "synthetic": False,
        "schema": 1,
        "experiment": "embedded",
        "protocol": {"transfer_mode": "cached_features", "n_train": 10},
        "algorithm_settings": {"p": 0.5},
        "git_commit": COMMIT + "-dirty",
    }
    config = {
        "model": {"dim": 64},
        "pretrain": {"max_steps": 300, "num_workers": 2},
        "seed": 0,
        "output_dir": "/somewhere/rq/seed0",
    }
    write_json_atomic(
        record_path(results, "embedded", "mnist", "rq", 0), {**base, "algorithm": "rq", "value": 80.0, "config": config}
    )
    write_json_atomic(
        record_path(results, "embedded", "mnist", "rq", 1),  # other seed, output dir, workers
        {
            **base,
            "algorithm": "rq",
            "seed": 1,
            "value": 82.0,
            "config": {
                **config,
                "seed": 1,
                "output_dir": "/elsewhere/rq/seed1",
                "pretrain": {"max_steps": 300, "num_workers": 8},
            },
        },
    )
    write_json_atomic(
        record_path(results, "embedded", "mnist", "none", 0),  # a bigger model: another section
        {**base, "algorithm": "none", "value": 50.0, "config": {**config, "model": {"dim": 128}}},
    )
    write_json_atomic(
        record_path(results, "nocfg", "mnist", "rq", 0), {**base, "algorithm": "rq", "value": 1.0, "experiment": None}
    )
    paths = build_table([results], reference=True)
    md = unpadded(paths["md"])
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    assert len(headings) == 3 and all("protocol `unrecorded`" in h for h in headings)
    assert any("Experiment `nocfg`" in h and "fingerprint `legacy`" in h for h in headings)
    assert "| Images | MNIST | accuracy | 81.00 ± 1.41 [68.29, 93.71] (2) |" in md  # seeds of one config are one cell
    assert "in: model.dim=128." in md and "in: model.dim=64." in md
    tidy = pd.read_csv(paths["csv"])
    assert set(tidy["algorithm_fingerprint"]) == {"unrecorded"} and set(tidy["dataset_fingerprint"]) == {"unrecorded"}
    assert "uncommitted changes" in md
    assert "## No records of protocol `dabs` yet" in paths["reference"].read_text()


def test_rebuilding_is_byte_identical(tmp_path):
    results = tmp_path / "results"
    more_bins = {**RQ, "num_bins": 32}
    for seed in range(2):
        write(results, "cola", "rq", seed, 40.0 + seed, paper_name="COLA", display="CoLA")
        write(results, "cola", "rq", seed, 10.0 + seed, protocol="smoke", settings=SMOKE)
        write(results, "vqa", "rq", seed, 50.0, domain="Vision/Language", paper_name="VQA", display="VQA")
    write(results, "cola", "emix", 0, 30.0, algorithm_settings=more_bins, paper_name="COLA", display="CoLA")
    first = {k: p.read_bytes() for k, p in build_table([results], reference=True).items()}
    second = {k: p.read_bytes() for k, p in build_table([results], reference=True).items()}
    assert set(first) == {"md", "csv", "png", "reference"} and first == second
