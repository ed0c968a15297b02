"""``rq``: Randomized Quantization of token embeddings as the view generator, InfoNCE objective."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dabs_rq.algorithms.base import OptimizerFactory, PretrainingAlgorithm
from dabs_rq.errors import UserError
from dabs_rq.ops import RandomizedQuantization

VIEWS = ("clean_vs_rq", "rq_vs_rq")
#: how the gradient of an RQ view reaches the embeddings (ours; see :func:`rq_view`)
GRADIENTS = ("straight_through", "reference", "none")


def check_gradient(gradient: object) -> str:
    if not isinstance(gradient, str) or gradient not in GRADIENTS:
        raise UserError(f"gradient must be one of {', '.join(GRADIENTS)}; got {gradient!r}")
    return gradient


class _ValueWithGradientOf(torch.autograd.Function):
    """``value`` itself (bit for bit) in the forward pass; the backward pass hands the incoming
    gradient to ``carrier`` (same shape and dtype), whose autograd graph then defines d(view)/d(x)."""

    @staticmethod
    def forward(ctx, value: Tensor, carrier: Tensor) -> Tensor:
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        return None, grad


def reference_gradient_carrier(x: Tensor, q: Tensor, applied: Tensor, quantizer: RandomizedQuantization) -> Tensor:
    """A tensor whose autograd graph gives, w.r.t. ``x``, the gradient of the reference module.

    ``q = quantizer(x)`` (detached) and ``applied`` the [batch] mask of quantized samples, as
    ``quantizer.forward_with_applied`` returns them. In microsoft/random_quantize the output is
    masks (no gradient) times proxies computed from each channel's min and max with autograd on:
    every output value is ``min + t * (max - min)`` with ``t`` fixed by the random draws. Here
    ``t = (q - min) / (max - min)`` (detached; 0 where ``max == min``) with min / max the
    statistics the quantizer used: over the finite values of one sample and channel
    (``statistics="channel"``) or of one sample (``"instance"``), taken with ``amin`` / ``amax``
    (tied extremes share the gradient equally; the reference's ``min(dim)`` gives it to one).
    Elements the quantizer returned unchanged (samples the ``p`` draw skipped, non-finite
    values) get the identity gradient, as the reference's ``torch.where`` with ``p`` gives;
    ``collapse="all_zeros"`` outputs constants, so zero gradient. Only the graph matters: use it
    through :func:`rq_view`, whose value is ``q`` itself.
    """
    shape, batch = x.shape, x.shape[0]
    if x.numel() == 0:
        return x
    if quantizer.statistics == "instance":
        view = (batch, 1, 1, -1)
    else:
        dim = int(quantizer.channel_dim) % x.dim()
        view = (batch, math.prod(shape[1:dim]), shape[dim], math.prod(shape[dim + 1 :]))
    xv, qv = x.reshape(view), q.detach().reshape(view)
    finite = torch.isfinite(xv)
    quantized = applied.view(batch, 1, 1, 1) & finite  # the elements RQ replaced
    if quantizer.collapse == "all_zeros":
        return torch.where(quantized, torch.zeros((), dtype=x.dtype, device=x.device), xv).reshape(shape)
    lo = torch.where(finite, xv, float("inf")).amin(dim=(1, 3), keepdim=True)
    hi = torch.where(finite, xv, float("-inf")).amax(dim=(1, 3), keepdim=True)
    with torch.no_grad():
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        lo_, hi_, q_ = lo.to(compute), hi.to(compute), qv.to(compute)
        # halved (exactly, a power of two) in channels whose range overflows the dtype, else as is
        scale = torch.where(torch.isfinite(hi_ - lo_), 1.0, 0.5).to(compute)
        t = (q_ * scale - lo_ * scale) / (hi_ * scale - lo_ * scale)
        t = torch.where(quantized & (hi_ > lo_), t, 0.0)
    path = lo + t * (hi - lo)
    return torch.where(quantized, path.to(x.dtype), xv).reshape(shape)


def rq_view(quantizer: RandomizedQuantization, embeddings: Tensor, gradient: str) -> Tensor:
    """One RQ view of ``embeddings``: the quantizer's output bit for bit, whatever ``gradient``.

    ``gradient`` (ours) sets what the view passes back to the embeddings: ``straight_through``
    the identity (as if RQ were the identity); ``reference`` the reference module's gradient,
    through each channel's min and max (:func:`reference_gradient_carrier`); ``none`` nothing.
    The three modes make the same random draws.
    """
    x = embeddings.detach()
    if gradient == "none":
        return quantizer(x)
    if gradient == "straight_through":
        return _ValueWithGradientOf.apply(quantizer(x), embeddings)
    if gradient == "reference":
        q, applied = quantizer.forward_with_applied(x)
        return _ValueWithGradientOf.apply(q, reference_gradient_carrier(embeddings, q, applied, quantizer))
    check_gradient(gradient)
    raise AssertionError("unreachable")


class RQContrastive(PretrainingAlgorithm):
    """Contrast the encoding of an RQ view of the embeddings with a clean (or second RQ) view.

    RQ acts channel-wise on [batch, tokens, dim] embeddings: channels = embedding
    dimensions, statistics over one sample's tokens. Quantization has zero gradient
    almost everywhere; ``gradient`` (ours, see :func:`rq_view`) chooses what the RQ view
    passes to the embedding module: ``straight_through`` (default) as if RQ were the
    identity, ``reference`` through each channel's min and max as the reference module does,
    or ``none``. With a gradient the embedder also learns from the RQ branch (essential for
    ``rq_vs_rq``, where no clean branch exists).
    """

    def __init__(
        self,
        encoder: nn.Module,
        optimizer: OptimizerFactory | None = None,
        quantizer: RandomizedQuantization | None = None,
        views: str = "clean_vs_rq",
        temperature: float = 0.2,
        gradient: str = "straight_through",
        symmetric: bool = True,
        gather_negatives: bool = True,
    ) -> None:
        super().__init__(encoder, optimizer, gather_negatives)
        if views not in VIEWS:
            raise UserError(f"views must be one of {', '.join(VIEWS)}; got {views!r}")
        if temperature <= 0:
            raise UserError(f"temperature must be > 0, got {temperature}")
        self.quantizer = quantizer if quantizer is not None else RandomizedQuantization(channel_dim=-1)
        self.views, self.temperature = views, temperature
        self.gradient, self.symmetric = check_gradient(gradient), symmetric

    def view(self, embeddings: Tensor) -> Tensor:
        """The augmentation: one RQ view of the embeddings, with the configured ``gradient``."""
        return rq_view(self.quantizer, embeddings, self.gradient)

    def loss(self, inputs: Sequence[Tensor]) -> Tensor:
        embeddings = self.encoder.embed(inputs)
        first = self.view(embeddings)
        second = self.view(embeddings) if self.views == "rq_vs_rq" else embeddings
        z_first = self.encoder.encode(first, output="projection")
        z_second = self.encoder.encode(second, output="projection")
        loss = self.contrast(z_first, z_second, self.temperature)
        if self.symmetric:
            loss = (loss + self.contrast(z_second, z_first, self.temperature)) / 2
        return loss

    def settings(self) -> dict:
        q = self.quantizer
        return {
            **super().settings(),
            "views": self.views,
            "temperature": self.temperature,
            "gradient": self.gradient,
            "symmetric": self.symmetric,
            "num_bins": q.num_bins,
            "collapse": q.collapse,
            "spacing": q.spacing,
            "p": q.p,
            "channel_dim": q.channel_dim,
            "statistics": q.statistics,
        }
