"""Samples/s per GPU from the benchmark JSONs in ``results/bench``: measured where a row fits, else assumed.

*Measured* where a ``pretrain_step`` benchmark has a row of the job's domain and algorithm
(``samples_per_s``, or ``batch`` and ``step_ms``; its ``none`` row, a frozen forward pass, times the
transfer's feature extraction; where eager and compiled rows exist (``compiled``), the one run as the
job's ``model.compile`` is used); otherwise *assumed, not measured*: an ``encoder`` benchmark's
encoder-only training step at the domain's token count divided by the algorithm's encoder passes per
step (:data:`ENCODER_PASSES`), and forward-only = that step x :data:`FORWARD_SPEEDUP`; with no
benchmark at all, :data:`DEFAULT_ENCODER_SAMPLES_PER_S`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dabs_rq.errors import UserError
from dabs_rq.paths import PROJECT_ROOT, RESULTS_DIR

BENCH_DIR = RESULTS_DIR / "bench"

#: Encoder forward + backward passes per pretraining step (emix: mixed + clean; rq: clean + RQ view).
ENCODER_PASSES = {"emix": 2, "rq": 2, "rq_emix": 2, "shed": 1, "mae": 1}
#: Passes assumed for an algorithm not in :data:`ENCODER_PASSES`.
DEFAULT_PASSES = 2
#: Samples/s of one training pass (fwd + bwd + AdamW) of the DABS-size encoder on one GPU when no
#: benchmark exists: a round planning figure, not a measurement.
DEFAULT_ENCODER_SAMPLES_PER_S = 1000.0
#: A forward pass without gradients is taken to run this many times faster than a training pass.
FORWARD_SPEEDUP = 3.0

ASSUMED = "assumed, not measured"


@dataclass
class Throughput:
    """Samples/s per GPU of one stage, whether measured, and where the number comes from."""

    samples_per_s: float
    measured: bool
    source: str

    @property
    def label(self) -> str:
        return "measured" if self.measured else ASSUMED


def _card(data: dict) -> str:
    machine = data.get("machine") or {}
    return str(data.get("card") or machine.get("card") or machine.get("gpu") or machine.get("cpu_model") or "?")


def _is_gpu(data: dict) -> bool:
    machine = data.get("machine") or {}
    return str(machine.get("device", "")).startswith("cuda") or bool(data.get("card") or machine.get("gpu"))


def _read_bench(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"--bench {path}: cannot read it ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise UserError(f"--bench {path}: not JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise UserError(f"--bench {path}: not a dabs-rq benchmark JSON (no 'rows' list)")
    if not _is_gpu(data):
        raise UserError(f"--bench {path}: a {(data.get('machine') or {}).get('device', '?')} benchmark; give a GPU one")
    data["_path"] = str(path)
    return data


@dataclass
class Bench:
    """The benchmark JSONs a plan's throughputs come from: one card's newest ``pretrain_step`` and ``encoder``."""

    card: str | None = None
    pretrain_step: dict | None = None
    encoder: dict | None = None
    note: str = ""

    @classmethod
    def find(cls, bench_dir: Path, card: str | None, bench_file: Path | None) -> Bench:
        """From ``bench_file`` alone, else the newest full (not ``quick``) GPU runs in ``bench_dir`` of ``card`` (a
        part of the card's name; default: the card of the newest ``pretrain_step`` run, else ``encoder`` run)."""
        if bench_file is not None:
            data = _read_bench(bench_file)
            kind = data.get("benchmark")
            if kind not in ("pretrain_step", "encoder"):
                raise UserError(f"--bench {bench_file}: a {kind!r} benchmark; give a pretrain_step or encoder one")
            return cls(_card(data), data if kind == "pretrain_step" else None, data if kind == "encoder" else None)
        runs = []
        for path in sorted(Path(bench_dir).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if (
                isinstance(data, dict)
                and _is_gpu(data)
                and not data.get("quick")
                and isinstance(data.get("rows"), list)
            ):
                data["_path"] = str(path)
                runs.append(data)
        runs = [r for r in runs if r.get("benchmark") in ("pretrain_step", "encoder")]
        cards = sorted({_card(r) for r in runs})
        if card is not None:
            runs = [r for r in runs if card.lower() in _card(r).lower()]
            if not runs:
                known = ", ".join(cards) or "none"
                return cls(note=f"no GPU benchmark in {bench_dir} for card {card!r} (cards with one: {known})")
        if not runs:
            return cls(note=f"no GPU benchmark in {bench_dir}")
        runs.sort(key=lambda r: (r.get("benchmark") == "pretrain_step", str(r.get("created", ""))))
        chosen = _card(runs[-1])
        mine = [r for r in runs if _card(r) == chosen]
        newest = {
            kind: max(
                (r for r in mine if r.get("benchmark") == kind), key=lambda r: str(r.get("created", "")), default=None
            )
            for kind in ("pretrain_step", "encoder")
        }
        return cls(chosen, newest["pretrain_step"], newest["encoder"])

    def files(self) -> list[str]:
        """The benchmark files used (relative to the project when inside it)."""
        paths = [Path(d["_path"]) for d in (self.pretrain_step, self.encoder) if d is not None]
        return [
            str(p.resolve().relative_to(PROJECT_ROOT)) if p.resolve().is_relative_to(PROJECT_ROOT) else str(p)
            for p in paths
        ]

    def _where(self, data: dict) -> str:
        return f"{Path(data['_path']).name} ({_card(data)}, {str(data.get('created', '?'))[:10]})"

    def _step_row(
        self, domain: str, algorithm: str, protocol: str | None, compile_on: bool
    ) -> tuple[float, str] | None:
        """Samples/s of the first measured row of (domain, algorithm) at ``protocol``, and how it ran; among rows
        that say whether they ran compiled (``compiled``), one that ran as ``compile_on`` comes first."""
        rows = []
        for row in (self.pretrain_step or {}).get("rows", []):
            if row.get("domain") != domain or row.get("algorithm") != algorithm:
                continue
            if protocol is not None and row.get("protocol") not in (None, protocol):
                continue
            if row.get("samples_per_s"):
                rows.append((row, float(row["samples_per_s"])))
            elif row.get("batch") and row.get("step_ms"):
                rows.append((row, 1000.0 * float(row["batch"]) / float(row["step_ms"])))
        rows.sort(key=lambda r: "compiled" in r[0] and bool(r[0]["compiled"]) != compile_on)  # stable
        if not rows:
            return None
        row, sps = rows[0]
        return sps, "" if "compiled" not in row else " (compiled)" if row["compiled"] else " (eager)"

    def _encoder_row(self, tokens: int | None, variant: str) -> tuple[float, str] | None:
        rows = [r for r in (self.encoder or {}).get("rows", []) if r.get("variant") == variant]
        # samples_per_s: benchmarks/encoder.py; ours_samples_per_s: its earlier rows (ours vs a baseline)
        rows = [
            (int(r.get("tokens") or 0), float(r.get("samples_per_s") or r.get("ours_samples_per_s") or 0)) for r in rows
        ]
        rows = [r for r in rows if r[0] > 0 and r[1] > 0]
        if not rows or tokens is None:
            return None
        exact = [r for r in rows if r[0] == tokens]
        above = sorted(r for r in rows if r[0] >= tokens)
        count, sps = exact[0] if exact else (above[0] if above else max(rows))
        at = f"{count} tokens" + ("" if count == tokens else f", the nearest measured to {tokens}")
        return sps, f"{variant}, {at}: {sps:,.0f} samples/s"

    def _encoder_pass(self, tokens: int | None, precision: str, compile_on: bool) -> tuple[float, str]:
        """Samples/s of one encoder training pass, and where that number comes from."""
        variant = "fp32" if str(precision).startswith("32") else "bf16-autocast"
        proxy = " (fp16 timed as bf16)" if str(precision).startswith("16") else ""
        for name in ([f"{variant}+compile"] if compile_on else []) + [variant]:
            found = self._encoder_row(tokens, name)
            if found is not None:
                return found[0], f"encoder-only step in {self._where(self.encoder)}, {found[1]}{proxy}"
        return DEFAULT_ENCODER_SAMPLES_PER_S, (
            f"dabs_rq.plan.DEFAULT_ENCODER_SAMPLES_PER_S = {DEFAULT_ENCODER_SAMPLES_PER_S:,.0f} samples/s per encoder "
            "training pass, a round planning figure"
        )

    def pretrain(
        self, domain: str, algorithm: str, tokens: int | None, precision: str, compile_on: bool, protocol: str | None
    ) -> Throughput:
        """Pretraining samples/s per GPU of (domain, algorithm)."""
        measured = self._step_row(domain, algorithm, protocol, compile_on)
        if measured is not None:
            return Throughput(
                measured[0], True, f"{self._where(self.pretrain_step)}, row {domain} / {algorithm}{measured[1]}"
            )
        sps, source = self._encoder_pass(tokens, precision, compile_on)
        passes = ENCODER_PASSES.get(algorithm, DEFAULT_PASSES)
        known = "" if algorithm in ENCODER_PASSES else " (assumed for an algorithm this plan does not know)"
        return Throughput(sps / passes, False, f"{source}, / {passes} encoder passes per {algorithm} step{known}")

    def forward(
        self, domain: str, tokens: int | None, precision: str, compile_on: bool, protocol: str | None
    ) -> Throughput:
        """Frozen-encoder forward samples/s per GPU (transfer feature extraction / online probe)."""
        measured = self._step_row(domain, "none", protocol, compile_on)
        if measured is not None:
            return Throughput(
                measured[0],
                True,
                f"{self._where(self.pretrain_step)}, row {domain} / none{measured[1]} (frozen forward)",
            )
        sps, source = self._encoder_pass(tokens, precision, compile_on)
        return Throughput(
            sps * FORWARD_SPEEDUP, False, f"{source}, x {FORWARD_SPEEDUP:g} for a forward pass without gradients"
        )
