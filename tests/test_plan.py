"""``dabs-rq plan``: the sweep's jobs, steps and samples, GPU-hours from a benchmark (or labelled
assumptions), cache disk, JSON output and one-line errors; nothing is launched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dabs_rq import plan as plan_module
from dabs_rq.plan import ASSUMED, DEFAULT_ENCODER_SAMPLES_PER_S, FORWARD_SPEEDUP, Bench, main, make_plan, render

CARD = "Test GPU 80GB"
IMAGE = 3 * 224 * 224  # bytes of one cached uint8 image


def write_bench(folder: Path, card: str = CARD, created: str = "2030-01-01T00:00:00+00:00") -> None:
    """A GPU ``pretrain_step`` JSON with imagenet rq (1,000 samples/s) and none (4,000, frozen forward) rows
    and an ``encoder`` JSON (bf16 at 197 tokens: 1,800 samples/s), both of ``card``."""
    folder.mkdir(parents=True, exist_ok=True)
    machine = {"device": "cuda", "gpu": card, "torch": "2.11.0"}
    step = {
        "benchmark": "pretrain_step",
        "quick": False,
        "created": created,
        "machine": machine,
        "rows": [
            {"domain": "imagenet", "algorithm": "rq", "samples_per_s": 1000.0},
            {"domain": "imagenet", "algorithm": "none", "batch": 64, "step_ms": 16.0},  # 4,000 samples/s
        ],
    }
    encoder = {
        "benchmark": "encoder",
        "quick": False,
        "created": created,
        "machine": machine,
        "rows": [{"tokens": 197, "variant": "bf16-autocast", "samples_per_s": 1800.0}],
    }
    slug = card.split()[0].lower()
    (folder / f"pretrain_step-cuda-{slug}.json").write_text(json.dumps(step))
    (folder / f"encoder-cuda-{slug}.json").write_text(json.dumps(encoder))


@pytest.fixture(scope="module")
def paper(tmp_path_factory) -> dict:
    """The plan of ``dabs-rq plan -m experiment=paper protocol=dabs`` against the fixture benchmarks."""
    folder = tmp_path_factory.mktemp("bench")
    write_bench(folder)
    return make_plan(["experiment=paper", "protocol=dabs"], Bench.find(folder, None, None))


def job(plan: dict, domain: str, algorithm: str, seed: int = 0) -> dict:
    (found,) = [j for j in plan["jobs"] if (j["domain"], j["algorithm"], j["seed"]) == (domain, algorithm, seed)]
    return found


@pytest.mark.slow
def test_the_paper_grid_is_the_sweeps_63_jobs_in_launch_order(paper):
    assert paper["totals"]["jobs"] == len(paper["jobs"]) == 63
    assert paper["grid"] == {
        "domain": ["imagenet", "librispeech", "wikitext103", "mc4", "pamap2", "chexpert", "mscoco"],
        "algorithm": ["none", "emix", "rq"],
        "seed": ["0", "1", "2"],
    }
    assert paper["jobs"][0]["overrides"][:3] == ["domain=imagenet", "algorithm=none", "seed=0"]
    assert paper["jobs"][-1]["overrides"][:3] == ["domain=mscoco", "algorithm=rq", "seed=2"]
    assert len({t["dataset"] for j in paper["jobs"] for t in j["transfers"]}) == 34  # the paper's 34 transfer sets


@pytest.mark.slow
def test_pretraining_steps_and_samples_are_max_steps_times_the_domains_batch(paper):
    for domain, batch in (("imagenet", 64), ("wikitext103", 128), ("pamap2", 256), ("mscoco", 64)):
        planned = job(paper, domain, "rq")
        assert (planned["pretrain_steps"], planned["pretrain_batch"]) == (100_000, batch)
        assert planned["pretrain_samples"] == 100_000 * batch
    none = job(paper, "imagenet", "none")
    assert none["pretrain_samples"] == 0 and none["pretrain_gpu_hours"] == 0 and none["pretrain_throughput"] is None
    assert paper["totals"]["pretrain_samples"] == 3 * 2 * 100_000 * (4 * 64 + 2 * 128 + 256)
    cifar = next(t for t in job(paper, "imagenet", "emix")["transfers"] if t["dataset"] == "cifar10")
    assert (cifar["epochs"], cifar["mode"], cifar["train_examples"], cifar["test_examples"]) == (
        100,
        "online",
        50_000,
        10_000,
    )
    # online probe: 100 epochs of the train split (last partial batch dropped) + the test split scored each epoch
    assert cifar["forward_samples"] == 100 * ((50_000 // 64) * 64 + 10_000)
    speech = {t["dataset"]: t for t in job(paper, "librispeech", "rq")["transfers"]}
    assert speech["google_speech"]["train_examples"] is None and speech["google_speech"]["gpu_hours"] is None
    assert "google_speech" in paper["totals"]["transfer_unknown"]


@pytest.mark.slow
def test_gpu_hours_come_from_the_benchmark_and_only_its_rows_are_measured(paper):
    assert paper["bench"]["card"] == CARD
    rq = job(paper, "imagenet", "rq")
    assert rq["pretrain_throughput"]["measured"] and rq["pretrain_throughput"]["label"] == "measured"
    assert rq["pretrain_gpu_hours"] == pytest.approx(6_400_000 / 1000 / 3600)
    assert rq["forward_throughput"]["measured"] and rq["forward_throughput"]["samples_per_s"] == pytest.approx(4000)
    forward = sum(t["forward_samples"] for t in rq["transfers"])
    assert rq["transfer_gpu_hours"] == pytest.approx(forward / 4000 / 3600)
    assert rq["gpu_hours"] == pytest.approx(rq["pretrain_gpu_hours"] + rq["transfer_gpu_hours"])
    # no pretrain_step row for emix: the encoder-only step / 2 passes, labelled an assumption with its source
    emix = job(paper, "imagenet", "emix")["pretrain_throughput"]
    assert not emix["measured"] and emix["label"] == ASSUMED
    assert emix["samples_per_s"] == pytest.approx(1800 / 2) and "encoder-cuda-test.json" in emix["source"]
    text = render(paper)
    lines = {tuple(line.split()[:3]): line for line in text.splitlines() if line.startswith("  imagenet ")}
    assert ASSUMED in lines["imagenet", "pretrain", "emix"]
    assert " measured " in lines["imagenet", "pretrain", "rq"] and ASSUMED not in lines["imagenet", "pretrain", "rq"]
    assert paper["totals"]["gpu_hours_includes_assumptions"]


@pytest.mark.slow
def test_cache_disk_is_computed_from_the_cache_format_or_stated_or_unknown(paper):
    caches = {(c["dataset"], c["split"]): c for c in paper["caches"]}
    assert caches["cifar10", "train"]["bytes"] == 50_000 * IMAGE and caches["cifar10", "train"]["status"] == "computed"
    assert caches["imagenet", "train"]["bytes"] == 1_281_167 * IMAGE
    assert caches["chexpert_transfer", "train"]["bytes"] == 223_414 * 224 * 224  # one uint8 channel
    assert caches["mc4", "train"]["bytes"] == 0  # streamed
    assert caches["paws_en", "train"]["bytes"] == 49_401 * (4 * 128 + 8)
    assert caches["vqa", "all"]["status"] == "stated" and caches["vqa", "all"]["bytes"] == 19 * 10**9
    fluent = [c for c in paper["caches"] if c["dataset"].startswith("fluent_speech")]  # one cache for three tasks
    assert len(fluent) == 1 and len(fluent[0]["shared_with"]) == 2
    assert paper["cache_bytes"]["known"] == sum(c["bytes"] or 0 for c in paper["caches"])


def test_without_a_benchmark_every_throughput_is_the_labelled_default(tmp_path):
    plan = make_plan(["domain=pamap2", "algorithm=rq"], Bench.find(tmp_path, None, None))
    (planned,) = plan["jobs"]
    pre, fwd = planned["pretrain_throughput"], planned["forward_throughput"]
    assert pre["label"] == fwd["label"] == ASSUMED and not pre["measured"] and not fwd["measured"]
    assert "DEFAULT_ENCODER_SAMPLES_PER_S" in pre["source"]
    assert pre["samples_per_s"] == DEFAULT_ENCODER_SAMPLES_PER_S / 2  # rq: two encoder passes per step
    assert fwd["samples_per_s"] == DEFAULT_ENCODER_SAMPLES_PER_S * FORWARD_SPEEDUP
    assert planned["pretrain_gpu_hours"] == pytest.approx(100_000 * 256 / (DEFAULT_ENCODER_SAMPLES_PER_S / 2) / 3600)
    text = render(plan)
    assert "Benchmarks used: none" in text and "every throughput below is assumed, not measured" in text
    assert text.count("measured") == text.count("not measured")  # nothing is called measured


def test_card_selects_that_cards_benchmarks_and_compile_adds_an_allowance(tmp_path):
    write_bench(tmp_path, card="Other GPU", created="2031-01-01T00:00:00+00:00")  # newer: the default card
    write_bench(tmp_path)
    assert Bench.find(tmp_path, None, None).card == "Other GPU"
    plan = make_plan(["domain=imagenet", "algorithm=rq", "model.compile=true"], Bench.find(tmp_path, "test gpu", None))
    (planned,) = plan["jobs"]
    assert plan["bench"]["card"] == CARD and planned["pretrain_throughput"]["measured"]
    assert planned["compile_gpu_hours"] == pytest.approx(7 * plan_module.COMPILE_ALLOWANCE_S / 3600)  # pretrain + 6
    assert any("model.compile" in note and ASSUMED in note for note in planned["notes"])
    unknown = Bench.find(tmp_path, "A100", None)
    assert unknown.card is None and "no GPU benchmark" in unknown.note and CARD in unknown.note


def test_eager_and_compiled_rows_the_one_run_as_the_jobs_compile_setting_is_used(tmp_path):
    path = tmp_path / "pretrain_step-cuda.json"
    rows = [
        {"protocol": "dabs", "domain": "imagenet", "algorithm": a, "compiled": c, "samples_per_s": sps}
        for a, c, sps in (("rq", False, 900.0), ("rq", True, 2700.0), ("none", False, 3000.0), ("none", True, 9000.0))
    ]
    payload = {"benchmark": "pretrain_step", "quick": False, "card": CARD, "machine": {"device": "cuda"}, "rows": rows}
    path.write_text(json.dumps(payload))
    bench = Bench.find(tmp_path, None, path)
    for compile_on, rq, none in ((False, 900, 3000), (True, 2700, 9000)):
        step = bench.pretrain("imagenet", "rq", 197, "bf16-mixed", compile_on, "dabs")
        forward = bench.forward("imagenet", 197, "bf16-mixed", compile_on, "dabs")
        assert (step.samples_per_s, forward.samples_per_s) == (rq, none) and step.measured and forward.measured
        assert ("(compiled)" if compile_on else "(eager)") in step.source
    planned = make_plan(["domain=imagenet", "algorithm=rq", "model.compile=auto"], bench)["jobs"][0]
    assert planned["pretrain_throughput"]["samples_per_s"] == 2700  # auto: compiled on a GPU


def test_main_writes_the_plan_as_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    code = main(["-m", "domain=pamap2", "algorithm=none,rq", "--bench-dir", str(tmp_path), "--json", str(out)])
    assert code == 0
    plan = json.loads(out.read_text())
    assert [j["algorithm"] for j in plan["jobs"]] == ["none", "rq"] and plan["totals"]["jobs"] == 2
    assert plan["jobs"][1]["pretrain_samples"] == 100_000 * 256
    assert plan["totals"]["gpu_hours"] == pytest.approx(sum(j["gpu_hours"] for j in plan["jobs"]))
    printed = capsys.readouterr().out
    assert "pamap2/rq/seed0" in printed and f"Plan written to {out}" in printed


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["domain=nope"], "unknown domain/dataset 'nope'"),
        (["domain=pamap2", "transfer.epochs=0"], "transfer.epochs must be a positive integer"),
        ([], "domain is not set"),
        (["domain=pamap2", "--bench", "missing.json"], "--bench missing.json: cannot read it"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, tmp_path, capsys):
    assert main([*args, "--bench-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dabs-rq plan: error: ") and expected in err and err.count("\n") == 1


@pytest.mark.integration
def test_dabs_rq_plan_with_an_unknown_experiment_is_one_line_and_exit_2():
    done = subprocess.run(
        [sys.executable, "-m", "dabs_rq.cli", "plan", "-m", "experiment=nope", "protocol=dabs"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("dabs-rq plan: error: unknown experiment 'nope'; valid: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and done.stdout == ""


def test_example_counts_come_from_the_dataset_yaml_and_leave_its_fingerprint_unchanged():
    """``examples`` in a dataset YAML is what plan reads (source: the YAML unless stated), and it is not
    part of the dataset's identity: dataset fingerprints, records and run states ignore it."""
    from omegaconf import OmegaConf

    from dabs_rq.checkpointing import fingerprint
    from dabs_rq.data import domains
    from dabs_rq.plan.datasets import Examples, examples
    from dabs_rq.results.protocol import dataset_identity, dataset_settings, digest, portable

    cifar = domains.load("cifar10")
    assert examples(cifar, False) == Examples(50_000, 10_000, "domains/cifar10.yaml")
    assert examples(domains.load("vgg_flower"), False).approx
    bare = OmegaConf.to_container(cifar, resolve=True)
    del bare["examples"]
    stated = {**bare, "examples": {"train": 1, "test": None, "source": "a count", "approximate": True}}
    assert examples(OmegaConf.create(stated), False) == Examples(1, None, "a count", True)
    assert examples(OmegaConf.create(bare), False).source == "unknown"
    roots = {"home": Path.home()}
    assert digest(dataset_settings(stated, stated, roots)) == digest(dataset_settings(bare, bare, roots))
    run = {"seed": 0}
    assert fingerprint({**run, "pretrain_dataset": portable(dataset_identity(stated), roots)}) == fingerprint(
        {**run, "pretrain_dataset": portable(bare, roots)}
    )


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ({"train": 1}, "examples.test' is missing"),
        ({"train": -1, "test": 1}, "non-negative integer or null"),
        ({"train": 1, "test": 1, "rows": 2}, "examples.rows' is not a known key"),
        ({"train": 1, "test": 1, "approximate": "yes"}, "true or false"),
    ],
)
def test_a_malformed_examples_key_is_refused_naming_it(tmp_path, examples, message):
    from omegaconf import OmegaConf

    from dabs_rq.data import domains

    cfg = domains.load("cifar10")
    cfg.examples = examples
    path = tmp_path / "cifar10.yaml"
    OmegaConf.save(cfg, path)
    with pytest.raises(domains.DomainConfigError, match=message):
        domains.validate(OmegaConf.load(path), path)
