"""The reference algorithm of microsoft/random_quantize (MIT), restated: the RQ test oracle's fallback.

Credit: Wu et al., "Randomized Quantization: A Generic Augmentation for Data Agnostic
Self-supervised Learning" (ICCV 2023), reference module ``RandomizedQuantizationAugModule``
at github.com/microsoft/random_quantize (MIT license). This is an independent restatement of
its algorithm (``transforms_like=False``: a (B, C, H, W) batch), used by :mod:`tests.reference`
when the upstream file is not vendored beside it. It assigns every value to a bin by building a
[B*C, num_bins, H, W] boolean membership mask and taking its argmax, so it is
O(num_bins x input) on purpose. Same random draws, in the same order, as the reference (cut
fractions, also for ``all_zeros``; then proxy fractions; then the ``p`` draw), so with the same
seed it gives the reference's output. Draws and constants live on ``x``'s device, so it also
runs on a GPU.
"""

from __future__ import annotations

import torch


def reference_quantize(x: torch.Tensor, num_bins: int, spacing: str, collapse: str, p: float = 1.0) -> torch.Tensor:
    b, c, h, w = x.shape
    rows = x.reshape(b * c, h, w)
    flat = rows.reshape(b * c, -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    n = b * c
    if spacing == "random":
        fractions = torch.rand(n * (num_bins - 1), device=x.device).reshape(n, num_bins - 1)
    else:
        step = torch.tensor(1) / (torch.tensor(num_bins - 1) + 1)
        fractions = torch.tile(torch.arange(step, 1, step=step), [n]).reshape(n, num_bins - 1).to(x.device)
    cuts = (fractions * (hi - lo).view(n, 1) + lo.view(n, 1)).view(n, -1, 1, 1)
    right_check = torch.cat([cuts, hi.view(n, 1, 1, 1) + 1], dim=1).sort(1).values
    right = torch.cat([cuts, hi.view(n, 1, 1, 1) + 1e-6], dim=1).sort(1).values
    left = torch.cat([lo.view(n, 1, 1, 1), cuts], dim=1).sort(1).values
    member = (rows.view(n, 1, h, w) < right_check) & (rows.view(n, 1, h, w) >= left)
    assert bool((member.sum(1) == 1).all())
    index = member.int().argmax(dim=1, keepdim=True)
    if collapse == "middle":
        proxies = (right + left) / 2
    elif collapse == "inside_random":
        u = torch.rand(n * num_bins, device=x.device).reshape(n, num_bins)
        proxies = left + u.view(n, -1, 1, 1) * (right - left)
    if collapse == "all_zeros":
        out = torch.zeros_like(x)
    else:
        out = torch.gather(proxies.expand(-1, -1, h, w), 1, index)[:, 0].reshape(b, c, h, w).to(x.dtype)
    if p != 1:
        out = torch.where(torch.rand([b, 1, 1, 1], device=x.device) < p, out, x)
    return out
