"""``compile: auto`` of the encoder and the RQ operator: on for CUDA, never a ``torch.compile`` call on a CPU.

No test here compiles anything: ``torch.compile`` is replaced by a stand-in that either raises (auto on a
CPU must not reach it) or records its call and returns the function itself (an explicit setting still
goes through it). The compiled-vs-eager agreement on a GPU is in ``tests/test_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from dabs_rq.compile_setting import check_compile, compile_mode, resolve_compile
from dabs_rq.data import domains
from dabs_rq.encoder import build_encoder
from dabs_rq.encoder.embedders import SegmentEmbedding1d
from dabs_rq.encoder.transformer import DomainAgnosticTransformer
from dabs_rq.errors import UserError
from dabs_rq.ops import RandomizedQuantization
from dabs_rq.ops import randomized_quantization as rq_module
from tests.conftest import compose_config


def _forbid_compile(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile was called")

    monkeypatch.setattr(torch, "compile", refuse)


def _record_compile(monkeypatch) -> list[str | None]:
    calls: list[str | None] = []

    def record(fn, *args, mode=None, **kwargs):
        calls.append(mode)
        return fn

    monkeypatch.setattr(torch, "compile", record)
    monkeypatch.setattr(rq_module, "_COMPILED", {})  # no compiled RQ left over from another test
    return calls


def _encoder(compile):
    torch.manual_seed(0)
    return DomainAgnosticTransformer(
        [SegmentEmbedding1d(16, 20, 5, 2)], dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32, out_dim=8, compile=compile
    ).eval()


def test_resolution_on_and_off_the_gpu():
    assert resolve_compile("auto", "cpu", "reduce-overhead") is False
    assert resolve_compile("auto", torch.device("cuda", 0), "reduce-overhead") == "reduce-overhead"
    assert resolve_compile("auto", "cuda") is True
    for setting in (False, True, "reduce-overhead"):
        assert resolve_compile(setting, "cpu") == setting and resolve_compile(setting, "cuda") == setting
    assert (
        compile_mode(True) is None
        and compile_mode("default") is None
        and compile_mode("max-autotune") == "max-autotune"
    )
    with pytest.raises(UserError, match="compile must be true, false, auto or one of default, reduce-overhead"):
        check_compile("reduce_overhead")


def test_auto_on_a_cpu_never_calls_torch_compile(monkeypatch):
    _forbid_compile(monkeypatch)
    x = torch.randn(3, 20, 2)
    auto = _encoder("auto")
    assert auto.compile_on("cpu") is False and auto.compile_on("cuda") is True
    assert torch.equal(auto([x]), _encoder(False)([x]))
    quantizer = RandomizedQuantization(channel_dim=-1, compile="auto", generator=torch.Generator().manual_seed(1))
    reference = RandomizedQuantization(channel_dim=-1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(quantizer(x), reference(x))


def test_an_explicit_setting_still_compiles_on_a_cpu(monkeypatch):
    calls = _record_compile(monkeypatch)
    x = torch.randn(3, 20, 2)
    _encoder(True)([x])
    _encoder("max-autotune-no-cudagraphs")([x])
    RandomizedQuantization(channel_dim=-1, compile="reduce-overhead")(x)
    assert calls == [None, "max-autotune-no-cudagraphs", "reduce-overhead"]


def test_the_encoder_compiles_once_per_resolved_mode(monkeypatch):
    calls = _record_compile(monkeypatch)
    encoder = _encoder(True)
    for _ in range(3):
        encoder([torch.randn(2, 20, 2)])
    assert calls == [None]


def test_a_bad_setting_fails_when_the_module_is_built():
    with pytest.raises(UserError, match="compile must be"):
        _encoder("fast")
    with pytest.raises(UserError, match="compile must be"):
        RandomizedQuantization(compile="fast")


@pytest.mark.parametrize("algorithm", ["rq", "rq_emix"])
@pytest.mark.parametrize("setting", ["false", "auto", "reduce-overhead"])
def test_the_rq_operator_follows_model_compile(algorithm, setting):
    cfg = compose_config(
        [f"algorithm={algorithm}", "model=tiny", f"model.compile={setting}", "domain=embedded_sensor", "output_dir=/x"]
    )
    encoder = build_encoder(cfg.model, domains.load("embedded_sensor").inputs)
    module = instantiate(cfg.algorithm.module, encoder=encoder, optimizer=instantiate(cfg.pretrain.optimizer))
    expected = False if setting == "false" else setting
    assert module.quantizer.compile == expected and encoder.compile_mode == expected


def test_auto_from_the_config_runs_an_rq_step_on_a_cpu_without_compiling(monkeypatch):
    _forbid_compile(monkeypatch)
    cfg = compose_config(
        ["algorithm=rq", "model=tiny", "model.compile=auto", "domain=embedded_sensor", "output_dir=/x"]
    )
    encoder = build_encoder(cfg.model, domains.load("embedded_sensor").inputs)
    module = instantiate(cfg.algorithm.module, encoder=encoder, optimizer=instantiate(cfg.pretrain.optimizer))
    loss = module.loss([torch.randn(4, 100, 6)])
    loss.backward()
    assert torch.isfinite(loss)
