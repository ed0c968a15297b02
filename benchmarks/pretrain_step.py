"""Where a pretraining step's time goes, and how many samples/s a job trains at, per domain and algorithm.

Two protocols (``dabs-rq bench --only pretrain_step --protocol dabs|smoke``; default: ``dabs`` on
CUDA, ``smoke`` on a CPU):

* ``dabs`` -- the paper's protocol on the real data pipeline. For each of imagenet, librispeech
  and wikitext103 the benchmark first writes a fixture in the dataset's real on-disk format into a
  temporary data root (an ImageNet-style ``train/<wnid>/*.JPEG`` folder of photo-sized JPEGs, a
  LibriSpeech ``<subset>/<speaker>/<chapter>/*.flac`` tree, WikiText-103 as the hub's parquet shards
  with a WordPiece tokenizer saved in ``<data_root>/tokenizers``; see :mod:`benchmarks.data_pipeline`
  and ``tests/text_fixtures.py``), whose reader then builds its cache as a job's would (224 px uint8
  images, float16 log-mel spectrograms, int32 token ids). Each job is then built exactly as
  ``dabs-rq protocol=dabs domain=<d> algorithm=<a>`` builds it: the same Hydra composition, the
  domain's :class:`~dabs_rq.data.datamodule.DomainDataModule` with its configured loader workers
  and batch (DABS: 64 images / spectrograms, 128 texts), the DABS encoder, the algorithm module
  with its optimizer (AdamW as configured), and ``trainer.precision=auto`` as it resolves (bf16
  autocast around the loss on a GPU with bf16, float32 elsewhere). Algorithms: none, emix, rq, shed,
  mae and rq_emix; each in eager mode and, where it compiles (``model.compile=auto`` on CUDA, which
  also compiles the RQ operator), compiled, side by side in one process on the same loader.
  ``--quick`` runs the same code on one batch of fixture data per domain with ``model=tiny``, a
  batch of 16 and no loader workers (a test of the code path, not a measurement).
* ``smoke`` -- the embedded default (``experiment=embedded``) on its four embedded domains, as
  before: none, emix and rq, eager.

Each row times the job's training step (``next(loader)`` + host-to-device copy, the algorithm's
loss under the job's autocast, backward, optimizer step), without Lightning's own per-step
bookkeeping (hooks, ``self.log``). ``samples_per_s`` and ``step_ms`` come from back-to-back steps
with one device synchronisation at the end (what a job runs); the shares (``data wait %``,
``augmentation %`` -- the algorithm's view generator: ``EMix.mix``, ``RQContrastive.view``,
``RQEMix.mix`` (RQ + mixing), ``ShED.shuffle``; MAE's masking is inside its loss and counts as
forward --, ``forward %``, ``backward %``, ``optimizer %``) from further steps with the device
synchronised around every part (on CUDA the two differ by the overlap that synchronising removes).
The first step of each variant is timed on its own (``first_step_s``; for a compiled variant it
includes ``torch.compile``: ``compile_s``, with ``new_graphs`` the graphs compiled then -- graphs
compiled by an earlier row of the same shape are reused) and is left out of every figure, as are
the warm-up steps. ``none`` has no pretraining step; its row times the transfer-side equivalent: data
wait + the frozen encoder's forward pass in eval mode without gradients (feature extraction).
``speedup`` = samples/s over the eager row's. Targets: data wait < 5 % for every row, RQ < 2 % of an
``rq`` step. A row that fails keeps its ``error`` and the benchmark goes on; with a time budget
(``dabs-rq bench --budget-s``), the rows it leaves no time for say so in ``error`` (``skipped``).
"""

from __future__ import annotations

import contextlib
import gc
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from dabs_rq.checks import job_datasets
from dabs_rq.compile_setting import resolve_compile
from dabs_rq.data import domains
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.distributed import resolve_precision
from dabs_rq.encoder import build_encoder
from dabs_rq.ops.randomized_quantization import AUTO_COMPILE_CUDA
from dabs_rq.paths import CONF_DIR, cache_dir
from dabs_rq.plan import tokens
from dabs_rq.run import build_algorithm, datamodule, pretrain_batch

TITLE = "Pretraining step breakdown"
PROTOCOLS = ("dabs", "smoke")
SMOKE_DOMAINS = ("embedded_image", "embedded_speech", "embedded_sensor", "embedded_text")
SMOKE_ALGORITHMS = ("none", "emix", "rq")
DABS_DOMAINS = ("imagenet", "librispeech", "wikitext103")
DABS_ALGORITHMS = ("none", "emix", "rq", "shed", "mae", "rq_emix")
#: the algorithm's augmentation (view generator) method, timed as "augmentation"
AUGMENTATION = {"emix": "mix", "rq": "view", "rq_emix": "mix", "shed": "shuffle"}
PARTS = ("data wait", "augmentation", "forward", "backward", "optimizer")
#: the dabs fixtures: training batches per domain written (quick: one batch and a remainder)
FIXTURE_BATCHES = 20
#: ``--quick`` (a test of the code path): this batch instead of the DABS one, ``model=tiny``, no loader workers
QUICK_BATCH = 16
#: with a time budget: the seconds a domain's fixture, an eager row and a compiled row need left to start
FIXTURE_RESERVE_S, EAGER_RESERVE_S, COMPILE_RESERVE_S = 30.0, 10.0, 60.0


def default_protocol(device: str) -> str:
    return "dabs" if torch.device(device).type == "cuda" else "smoke"


@dataclass(frozen=True)
class Steps:
    warmup: int  # after the first (timed alone) step
    timed: int  # back-to-back, one synchronisation: samples/s
    breakdown: int  # every part synchronised: the shares (on a CPU the timed steps serve, nothing is asynchronous)


def steps_for(device: torch.device, quick: bool) -> Steps:
    if device.type == "cuda":
        return Steps(2, 5, 5) if quick else Steps(3, 20, 10)
    return Steps(0, 0, 2) if quick else Steps(1, 0, 5)  # the DABS encoder takes seconds a step on a CPU


# --------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _timed(totals: dict | None, key: str, device: torch.device) -> Iterator[None]:
    if totals is None:
        yield
        return
    _sync(device)
    start = time.perf_counter()
    yield
    _sync(device)
    totals[key] += time.perf_counter() - start


def _batches(loader) -> Iterator:
    """The loader's batches for ever, a new shuffle per epoch (``set_epoch``, as the trainer calls it)."""
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


class Step:
    """One training step of ``module`` (or, for ``none``, one frozen forward pass of ``encoder``).

    ``run(totals)`` does one step; with a ``totals`` dict it synchronises the device around each part
    and adds the part's seconds to it (``loss`` = augmentation + forward, split afterwards).
    """

    def __init__(
        self,
        module,
        encoder: torch.nn.Module,
        algorithm: str,
        batches: Iterator,
        device: torch.device,
        autocast: torch.dtype | None,
    ) -> None:
        self.module, self.encoder, self.batches, self.device = module, encoder, batches, device
        self.train = bool(getattr(module, "requires_pretraining", True)) and algorithm != "none"
        self.amp = (lambda: torch.autocast(device.type, dtype=autocast)) if autocast else contextlib.nullcontext
        self.totals: dict | None = None
        self.optimizer = module.configure_optimizers() if self.train else None
        method = AUGMENTATION.get(algorithm)
        if self.train and method is not None:
            original = getattr(module, method)

            def timed(*args, **kwargs):
                with _timed(self.totals, "augmentation", device):
                    return original(*args, **kwargs)

            setattr(module, method, timed)

    def run(self, totals: dict | None = None) -> None:
        self.totals = totals
        with _timed(totals, "data wait", self.device):
            inputs, _ = next(self.batches)
            inputs = [x.to(self.device, non_blocking=True) for x in inputs]
        if not self.train:
            with _timed(totals, "forward", self.device), torch.no_grad(), self.amp():
                self.encoder.eval()(inputs)
            return
        self.module.train()
        with _timed(totals, "loss", self.device), self.amp():
            loss = self.module.loss(inputs)
        with _timed(totals, "backward", self.device):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with _timed(totals, "optimizer", self.device):
            self.optimizer.step()


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def time_steps(step: Step, batch: int, device: torch.device, steps: Steps) -> dict:
    """First step, warm-up, timed steps and breakdown steps: the row's figures."""
    graphs = _unique_graphs()
    _sync(device)
    start = time.perf_counter()
    step.run()
    _sync(device)
    first = time.perf_counter() - start
    new_graphs = _unique_graphs() - graphs
    for _ in range(steps.warmup):
        step.run()
    totals: dict[str, float] = defaultdict(float)
    for _ in range(steps.breakdown):
        step.run(totals)
    if "loss" in totals:
        totals["forward"] = totals.pop("loss") - totals["augmentation"]
    parts_s = sum(totals.values())
    if steps.timed:
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps.timed):
            step.run()
        _sync(device)
        step_s = (time.perf_counter() - start) / steps.timed
    else:  # nothing runs asynchronously on a CPU: the breakdown steps are the job's steps
        step_s = parts_s / steps.breakdown
    row = {
        "samples_per_s": round(batch / step_s, 1),
        "step_ms": round(1000 * step_s, 3),
        "first_step_s": round(first, 3),
        "new_graphs": new_graphs,
    }
    for part in PARTS:
        row[f"{part} %"] = round(100 * totals.get(part, 0.0) / parts_s, 2)
    return row


def _targets(row: dict, algorithm: str) -> dict:
    checks = [f"data wait {row['data wait %']:.2f}% < 5%"]
    met = row["data wait %"] < 5
    if algorithm == "rq":
        checks.append(f"RQ {row['augmentation %']:.2f}% < 2%")
        met = met and row["augmentation %"] < 2
    return {"target": "; ".join(checks), "met": bool(met)}


def _free(device: torch.device) -> None:
    if device.type == "cuda":  # the next row's model and compiled graphs get the memory back
        gc.collect()
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- smoke: the embedded default


def measure(domain: str, algorithm: str, steps: Steps, device: torch.device) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "experiment=embedded",
                f"domain={domain}",
                f"algorithm={algorithm}",
                "output_dir=/tmp/dabs_rq_bench",
            ],
        )
    torch.manual_seed(0)
    dataset_cfg = domains.load(domain)
    encoder = build_encoder(cfg.model, dataset_cfg.inputs).to(device)
    module = instantiate(cfg.algorithm.module, encoder=encoder, optimizer=instantiate(cfg.pretrain.optimizer))
    module = module.to(device)
    loader = DomainDataModule(dataset_cfg, cache_dir()).pretrain_dataloader()
    batch = int(dataset_cfg.batch_size)
    step = Step(module, encoder, algorithm, _batches(loader), device, None)
    row = {
        "protocol": "smoke",
        "domain": domain,
        "algorithm": algorithm,
        "batch": batch,
        "workers": int(dataset_cfg.get("num_workers", 0)),
        **time_steps(step, batch, device, steps),
    }
    row.pop("first_step_s"), row.pop("new_graphs")
    return {**row, **_targets(row, algorithm)}


# --------------------------------------------------------------------------- dabs: the paper's protocol


def write_wikitext(data_root: Path, n_train: int, n_val: int, seed: int = 0) -> dict:
    """WikiText-103 as the hub stores it (``wikitext/wikitext-103-v1/{train,validation}-*.parquet``), one
    paragraph-long line per example (40-200 words: most fill the 128 tokens, as real paragraphs do), and a
    WordPiece ``bert-base-uncased`` stand-in saved at ``<data_root>/tokenizers`` (the tests' tiny vocabulary:
    no hub download; the ids are still 128 per example, which is all the step's speed depends on)."""
    import pandas as pd

    from tests.text_fixtures import ENGLISH, write_parquet
    from tests.tokenizer_fixtures import write_bert_tokenizer

    rng = np.random.default_rng(seed)

    def lines(count: int) -> list[str]:
        return [" ".join(rng.choice(ENGLISH, size=int(rng.integers(40, 200)))) for _ in range(count)]

    folder = data_root / "wikitext" / "wikitext-103-v1"
    write_parquet(pd.DataFrame({"text": lines(n_train)}), folder, "train", shards=2)
    write_parquet(pd.DataFrame({"text": lines(n_val)}), folder, "validation")
    write_bert_tokenizer(data_root)
    return {"train": n_train, "test": n_val, "bytes": sum(p.stat().st_size for p in folder.iterdir())}


def write_fixture(domain: str, data_root: Path, batch: int, quick: bool) -> dict:
    """The domain's dataset in its real on-disk format under ``data_root``: ``FIXTURE_BATCHES`` batches (quick:
    one) and a remainder."""
    from benchmarks.data_pipeline import write_imagenet, write_librispeech

    n = batch * (1 if quick else FIXTURE_BATCHES) + 3
    if domain == "imagenet":
        return {**write_imagenet(data_root / "imagenet", n, n_val=10), "what": "ImageNet-style JPEG folders"}
    if domain == "librispeech":
        return {**write_librispeech(data_root / "librispeech", n, n_dev=4), "what": "LibriSpeech FLAC tree"}
    if domain == "wikitext103":
        return {**write_wikitext(data_root, n, 16), "what": "WikiText-103 parquet + WordPiece tokenizer"}
    raise ValueError(f"no fixture writer for domain {domain!r}; one of {', '.join(DABS_DOMAINS)}")


def job_config(domain: str, algorithm: str, compile: str, data_root: Path, cache: Path, quick: bool) -> DictConfig:
    """The config ``dabs-rq protocol=dabs domain=<domain> algorithm=<algorithm> model.compile=<compile>``
    composes (``quick``: also ``model=tiny pretrain.batch_size=16 pretrain.num_workers=0``), reading ``data_root`` into ``cache``."""
    overrides = [
        "protocol=dabs",
        f"domain={domain}",
        f"algorithm={algorithm}",
        f"model.compile={compile}",
        f"data_root={data_root}",
        f"cache_dir={cache}",
        "output_dir=/tmp/dabs_rq_bench",
        "logger=none",
    ]
    if quick:
        overrides += ["model=tiny", f"pretrain.batch_size={QUICK_BATCH}", "pretrain.num_workers=0"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def _autocast(cfg: DictConfig, device: torch.device) -> tuple[str, torch.dtype | None]:
    """The precision ``trainer.precision`` resolves to on ``device`` (as the job's trainer does) and the
    autocast dtype it runs the loss under."""
    precision = str(resolve_precision(cfg.trainer.precision, "gpu" if device.type == "cuda" else "cpu"))
    if precision.startswith("bf16"):
        return precision, torch.bfloat16
    if precision.startswith("16"):
        raise ValueError("trainer.precision=16-mixed needs a GradScaler; this benchmark times bf16-mixed or 32")
    return precision, None


def _settings(device: torch.device) -> list[str]:
    """The model.compile settings measured: eager, and where auto compiles (CUDA), auto."""
    return ["false", "auto"] if device.type == "cuda" else ["false"]  # auto is eager on a CPU: the same run


class DomainData:
    """One domain's fixture, its cache and its pretraining loader (shared by every row of the domain)."""

    def __init__(self, domain: str, root: Path, quick: bool) -> None:
        self.root, self.cache = root / "data", root / "cache"
        cfg = job_config(domain, "none", "false", self.root, self.cache, quick)
        self.dataset_cfg, _ = job_datasets(cfg)
        self.batch = pretrain_batch(cfg, self.dataset_cfg)
        self.tokens = tokens(self.dataset_cfg)
        start = time.perf_counter()
        self.written = write_fixture(domain, self.root, self.batch, quick)
        self.write_s = time.perf_counter() - start
        data = datamodule(cfg, self.dataset_cfg, self.cache, self.batch)
        start = time.perf_counter()
        self.examples = len(data.split("train"))  # the reader builds its cache, as a job's first epoch would
        self.cache_s = time.perf_counter() - start
        self.workers = data.num_workers
        self.loader = data.pretrain_dataloader()
        self.batches = _batches(self.loader)
        print(
            f"[bench pretrain_step] {domain}: {self.written['train']} training files "
            f"({self.written['bytes'] / 1e6:.0f} MB, {self.written['what']}) in {self.write_s:.1f} s; "
            f"{self.examples} examples cached in {self.cache_s:.1f} s; batch {self.batch}, {self.workers} workers",
            flush=True,
        )


def measure_dabs(
    data: DomainData, domain: str, algorithm: str, compile: str, steps: Steps, device: torch.device, quick: bool
) -> dict:
    cfg = job_config(domain, algorithm, compile, data.root, data.cache, quick)
    precision, autocast = _autocast(cfg, device)
    torch.manual_seed(0)
    encoder = build_encoder(cfg.model, data.dataset_cfg.inputs).to(device)
    module = build_algorithm(cfg, encoder).to(device)
    compiled = encoder.compile_on(device)
    step = Step(module, encoder, algorithm, data.batches, device, autocast)
    timing = time_steps(step, data.batch, device, steps)
    row = {
        "protocol": "dabs",
        "domain": domain,
        "algorithm": algorithm,
        "compile": compile,
        "compiled": bool(compiled),
        "compile_mode": _mode_label(compiled, module),
        "precision": precision,
        "batch": data.batch,
        "tokens": data.tokens,
        "workers": data.workers,
        **timing,
        "compile_s": timing["first_step_s"] if compiled else None,
    }
    del step, module, encoder
    _free(device)
    return {**row, **_targets(row, algorithm)}


def _mode_label(encoder_mode: bool | str, module) -> str:
    """What ran compiled: the encoder's mode and, for RQ algorithms, the operator's."""
    if not encoder_mode:
        return "eager"
    label = f"encoder {'default' if encoder_mode is True else encoder_mode}"
    quantizer = getattr(module, "quantizer", None)
    if quantizer is not None:
        rq = resolve_compile(quantizer.compile, next(module.parameters()).device, AUTO_COMPILE_CUDA)
        label += f", RQ {'eager' if not rq else 'default' if rq is True else rq}"
    return label


def _error_row(domain: str, algorithm: str, compile: str, err: BaseException) -> dict:
    traceback.print_exception(err)
    return {
        "protocol": "dabs",
        "domain": domain,
        "algorithm": algorithm,
        "compile": compile,
        "error": f"{type(err).__name__}: {err}"[:300],
    }


def _add_speedups(rows: list[dict]) -> None:
    eager = {
        (r["domain"], r["algorithm"]): r["samples_per_s"]
        for r in rows
        if r.get("compile") == "false" and r.get("samples_per_s")
    }
    for r in rows:
        base = eager.get((r["domain"], r["algorithm"]))
        r["speedup"] = round(r["samples_per_s"] / base, 3) if base and r.get("samples_per_s") else None


def _jobs(device: torch.device, algorithms: tuple[str, ...]) -> list[tuple[str, str]]:
    """(algorithm, model.compile) of one domain in the order they run: eager and auto of each algorithm side
    by side."""
    return [(a, c) for a in algorithms for c in _settings(device)]


def _skipped_row(domain: str, algorithm: str, compile: str, left_s: float) -> dict:
    return {
        "protocol": "dabs",
        "domain": domain,
        "algorithm": algorithm,
        "compile": compile,
        "error": f"skipped: {max(left_s, 0):.0f} s of the time budget left",
    }


def run_dabs(
    device: torch.device,
    quick: bool,
    domain_names: tuple[str, ...] | None = None,
    algorithms: tuple[str, ...] | None = None,
    budget_s: float | None = None,
    log: Callable[[dict], None] = lambda row: print(f"[bench pretrain_step] {row}", flush=True),
) -> list[dict]:
    """Every (domain, algorithm, compile setting) row. With ``budget_s``, a row that would start with less
    than its reserve left (``COMPILE_RESERVE_S`` for a compiled one, ``EAGER_RESERVE_S`` else) is skipped
    (its row says so), so that the run ends near its budget with what it measured."""
    domain_names, algorithms = domain_names or DABS_DOMAINS, algorithms or DABS_ALGORITHMS
    deadline = time.perf_counter() + budget_s if budget_s else float("inf")
    steps = steps_for(device, quick)
    if device.type == "cuda":
        # One process runs every domain's jobs: more compiled variants of ``_encode`` than one job has.
        torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dabs_rq_pretrain_step_") as tmp:
        for domain in domain_names:
            jobs = _jobs(device, algorithms)
            left = deadline - time.perf_counter()
            if left < FIXTURE_RESERVE_S:
                rows += [_skipped_row(domain, a, c, left) for a, c in jobs]
                continue
            try:
                data = DomainData(domain, Path(tmp) / domain, quick)
            except Exception as err:  # the other domains still run; the row says why
                rows.append(_error_row(domain, "*", "*", err))
                continue
            for algorithm, compile in jobs:
                left = deadline - time.perf_counter()
                if left < (EAGER_RESERVE_S if compile == "false" else COMPILE_RESERVE_S):
                    row = _skipped_row(domain, algorithm, compile, left)
                else:
                    try:
                        row = measure_dabs(data, domain, algorithm, compile, steps, device, quick)
                    except Exception as err:
                        row = _error_row(domain, algorithm, compile, err)
                        _free(device)
                rows.append(row)
                log(row)
            del data
            _free(device)
    _add_speedups(rows)
    return rows


def run(
    device: str = "cpu", quick: bool = False, protocol: str | None = None, budget_s: float | None = None
) -> list[dict]:
    """The benchmark's rows; ``budget_s`` (dabs protocol): about how long it may take (see :func:`run_dabs`)."""
    protocol = protocol or default_protocol(device)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    dev = torch.device(device)
    if protocol == "dabs":
        return run_dabs(dev, quick, budget_s=budget_s)
    steps = Steps(2, 0, 5 if quick else 30) if dev.type != "cuda" else steps_for(dev, quick)
    return [measure(d, a, steps, dev) for d in SMOKE_DOMAINS for a in SMOKE_ALGORITHMS]
