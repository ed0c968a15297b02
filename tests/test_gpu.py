"""GPU path checks (skipped without CUDA): SDPA runs a fused kernel in the DABS encoder under
bf16 autocast, a pretrain -> transfer job defaults to bf16-mixed on the GPU and records it, and
``model.compile=auto`` compiles on the GPU (encoder and RQ operator) with the eager results: the same
features and one training step's loss and gradients within a tolerance (float32 and bf16 autocast)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from dabs_rq.data import domains
from dabs_rq.encoder import build_encoder
from dabs_rq.encoder.transformer import Attention
from dabs_rq.run import build_algorithm, run
from tests.conftest import compose_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("tokens", [65, 197])
def test_dabs_encoder_attention_runs_on_a_fused_sdpa_kernel_under_bf16(tokens):
    model = compose_config(["domain=embedded_sensor", "model=dabs"]).model
    attn = (
        Attention(dim=model.dim, heads=model.heads, dim_head=model.dim_head, dropout=0.1, attn_dropout=0.1)
        .cuda()
        .train()
    )
    x = torch.randn(64, tokens, model.dim, device="cuda", requires_grad=True)
    # Only the fused kernels allowed: this raises if SDPA would have to fall back to unfused math.
    with (
        sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]),
        torch.autocast("cuda", dtype=torch.bfloat16),
    ):
        out = attn(x)
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_a_job_on_the_gpu_runs_in_bf16_mixed_and_records_it(tmp_path, data_cache):
    cfg = compose_config(
        [
            "experiment=embedded",
            "domain=embedded_sensor",
            "algorithm=rq",
            "model=tiny",
            "logger=none",
            "pretrain.max_steps=5",
            "transfer.epochs=2",
            "trainer.enable_progress_bar=false",
            f"results_dir={tmp_path / 'results'}",
            f"output_dir={tmp_path / 'out'}",
            f"cache_dir={data_cache}",
        ]
    )
    (record,) = run(cfg)
    assert record["pretraining"]["precision"] == "bf16-mixed"
    assert record["protocol"]["precision"] == "bf16-mixed"
    assert 0 <= record["value"] <= 100


def _rq_job(compile: str, device: str = "cuda"):
    """The rq algorithm of an imagenet job with a small encoder (dropout off: compiled and eager code draw
    different dropout masks) on ``device``; the same initial weights for every ``compile``."""
    cfg = compose_config(
        [
            "domain=imagenet",
            "algorithm=rq",
            "model=tiny",
            "model.dropout=0",
            "model.emb_dropout=0",
            "model.attn_dropout=0",
            f"model.compile={compile}",
        ]
    )
    torch.manual_seed(0)
    encoder = build_encoder(cfg.model, domains.load("imagenet").inputs)
    return build_algorithm(cfg, encoder).to(device)


def _amp(dtype, device: str = "cuda"):
    return torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _image_batch(device: str = "cuda"):
    return torch.rand(16, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(device)


#: (autocast dtype, tolerance): float32 compiled code reorders sums; bf16 rounds every matmul to 8 bits
PRECISIONS = [pytest.param(None, 1e-3, id="fp32"), pytest.param(torch.bfloat16, 3e-2, id="bf16")]


@pytest.mark.parametrize(("dtype", "tol"), PRECISIONS)
def test_compile_auto_compiles_on_the_gpu_and_gives_the_eager_features(dtype, tol, device="cuda"):
    eager, compiled = _rq_job("false", device), _rq_job("auto", device)
    assert compiled.encoder.compile_on("cuda") is True and eager.encoder.compile_on("cuda") is False
    assert compiled.quantizer.compile == "auto"
    x = _image_batch(device)
    with torch.no_grad(), _amp(dtype, device):
        want = eager.encoder.eval()([x]).float()
        got = compiled.encoder.eval()([x]).float()
        got_again = compiled.encoder.eval()([x]).float()  # a second call runs the compiled code, not the compile
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    torch.testing.assert_close(got_again, got)


def training_steps(compile: str, dtype, device: str = "cuda", steps: int = 3) -> dict:
    """``steps`` rq training steps (AdamW as configured) on one batch: the losses, the first step's gradients,
    and how far the weights moved."""
    module = _rq_job(compile, device).train()
    optimizer = module.configure_optimizers()
    start = torch.cat([p.detach().flatten() for p in module.parameters()]).float()
    x, losses = _image_batch(device), []
    for step in range(steps):  # compile, then (CUDA graphs) warm-up / record, then replay
        torch.manual_seed(10 + step)  # the same RQ draws for both
        optimizer.zero_grad(set_to_none=True)
        with _amp(dtype, device):
            loss = module.loss([x])
        loss.backward()
        if step == 0:
            grads = torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None]).float()
        optimizer.step()
        losses.append(loss.detach().float())
    moved = torch.cat([p.detach().flatten() for p in module.parameters()]).float() - start
    return {"losses": torch.stack(losses), "grads": grads, "moved": moved}


@pytest.mark.parametrize(("dtype", "tol"), PRECISIONS)
def test_one_compiled_training_step_gives_the_eager_loss_gradients_and_update(dtype, tol, device="cuda"):
    eager, compiled = training_steps("false", dtype, device), training_steps("auto", dtype, device)
    torch.testing.assert_close(compiled["losses"], eager["losses"], rtol=tol, atol=tol)
    assert F.cosine_similarity(compiled["grads"], eager["grads"], dim=0) > 1 - tol
    assert (compiled["grads"].norm() / eager["grads"].norm() - 1).abs() < tol
    # AdamW moves each weight by about lr x the sign of its gradient: the updates point the same way
    # (bf16 flips the sign of some tiny gradients, so less strictly)
    assert F.cosine_similarity(compiled["moved"], eager["moved"], dim=0) > (0.98 if dtype is None else 0.8)
