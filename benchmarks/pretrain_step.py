"""Where a pretraining step's time goes, per embedded-default domain and algorithm.

Builds each job exactly as ``dabs-rq experiment=embedded domain=<d> algorithm=<a>`` does
(same config, data loader with the domain's configured workers, encoder, optimizer) and
times ``steps`` training steps split into: data wait (``next(loader)``), augmentation (the
algorithm's view generator: ``EMix.mix`` / ``RQContrastive.view``), forward (the rest of the
loss), backward and optimizer. ``none`` has no pretraining step; its row times the
transfer-side equivalent (data wait + frozen forward for feature extraction).
Targets: RQ below 2 % of an ``rq`` step; data wait below 5 % for every domain.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dabs_rq.data import domains
from dabs_rq.data.datamodule import DomainDataModule
from dabs_rq.encoder import build_encoder
from dabs_rq.paths import CONF_DIR, cache_dir

TITLE = "Pretraining step breakdown (embedded default)"
DOMAINS = ("embedded_image", "embedded_speech", "embedded_sensor", "embedded_text")
ALGORITHMS = ("none", "emix", "rq")
AUGMENTATION = {"emix": "mix", "rq": "view"}


@contextmanager
def _timed(totals: dict, key: str, device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    totals[key] += time.perf_counter() - start


def _wrap_timed(obj: object, method: str, totals: dict, device: torch.device) -> None:
    original = getattr(obj, method)

    def timed(*args, **kwargs):
        with _timed(totals, "augmentation", device):
            return original(*args, **kwargs)

    setattr(obj, method, timed)


def _batches(loader) -> Iterator:
    while True:
        yield from loader


def measure(domain: str, algorithm: str, steps: int, device: torch.device) -> dict:
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
    module = instantiate(cfg.algorithm.module, encoder=encoder, optimizer=instantiate(cfg.pretrain.optimizer)).to(
        device
    )
    loader = DomainDataModule(dataset_cfg, cache_dir()).pretrain_dataloader()
    batches = _batches(loader)
    totals: dict[str, float] = defaultdict(float)
    if algorithm in AUGMENTATION:
        _wrap_timed(module, AUGMENTATION[algorithm], totals, device)
        optimizer = module.configure_optimizers()
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            totals.clear()
        with _timed(totals, "data wait", device):
            inputs, _ = next(batches)
            inputs = [x.to(device, non_blocking=True) for x in inputs]
        if algorithm not in AUGMENTATION:
            with _timed(totals, "forward", device), torch.no_grad():
                encoder.eval()(inputs)
            continue
        module.train()
        with _timed(totals, "loss", device):
            loss = module.loss(inputs)
        with _timed(totals, "backward", device):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with _timed(totals, "optimizer", device):
            optimizer.step()
    if "loss" in totals:
        totals["forward"] = totals.pop("loss") - totals["augmentation"]
    step_s = sum(totals.values()) / steps
    row = {
        "domain": domain,
        "algorithm": algorithm,
        "batch": int(dataset_cfg.batch_size),
        "workers": int(dataset_cfg.get("num_workers", 0)),
        "step_ms": 1000 * step_s,
    }
    for part in ("data wait", "augmentation", "forward", "backward", "optimizer"):
        row[f"{part} %"] = 100 * totals.get(part, 0.0) / (step_s * steps)
    checks = [f"data wait {row['data wait %']:.2f}% < 5%"]
    met = row["data wait %"] < 5
    if algorithm == "rq":
        checks.append(f"RQ {row['augmentation %']:.2f}% < 2%")
        met = met and row["augmentation %"] < 2
    row["target"] = "; ".join(checks)
    row["met"] = bool(met)
    return row


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    steps = 5 if quick else 30
    return [measure(d, a, steps, torch.device(device)) for d in DOMAINS for a in ALGORITHMS]
