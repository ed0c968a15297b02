"""GPU path checks (skipped without CUDA): SDPA runs a fused kernel in the DABS encoder under
bf16 autocast, and a pretrain -> transfer job defaults to bf16-mixed on the GPU and records it."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from dabs_rq.encoder.transformer import Attention
from dabs_rq.run import run
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
