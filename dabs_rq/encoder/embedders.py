"""Embedding modules: the only part of the encoder that differs between domains.

Each turns one raw input into a sequence of ``dim``-wide token embeddings and exposes
``num_tokens`` (sequence length it produces) and ``spec()`` (what input it accepts), so
that a transfer dataset can be checked against a pretrained encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dabs_rq.errors import UserError


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    a, b = value
    return int(a), int(b)


class PatchEmbedding2d(nn.Module):
    """Non-overlapping ViT patches of a [B, C, H, W] input (images, spectrograms)."""

    def __init__(self, dim: int, image_size: Sequence[int], patch_size: Sequence[int], channels: int) -> None:
        super().__init__()
        self.image_size, self.patch_size, self.channels = _pair(image_size), _pair(patch_size), int(channels)
        (h, w), (ph, pw) = self.image_size, self.patch_size
        if h % ph or w % pw:
            raise UserError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        self.grid = (h // ph, w // pw)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.patch_dim = ph * pw * self.channels
        self.proj = nn.Linear(self.patch_dim, dim)

    def patchify(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, tokens, ph*pw*C] in DABS's (p1 p2 c) order."""
        b = x.shape[0]
        (gh, gw), (ph, pw) = self.grid, self.patch_size
        x = x.reshape(b, self.channels, gh, ph, gw, pw).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, gh * gw, self.patch_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.patchify(x))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: [C, H, W]."""
        return (self.channels, *self.image_size)

    def spec(self) -> dict:
        return {
            "type": "patches2d",
            "image_size": list(self.image_size),
            "patch_size": list(self.patch_size),
            "channels": self.channels,
        }


class SegmentEmbedding1d(nn.Module):
    """Consecutive time segments of a [B, T, C] signal (sensor windows)."""

    def __init__(self, dim: int, seq_len: int, segment_size: int, channels: int) -> None:
        super().__init__()
        if seq_len % segment_size:
            raise UserError(f"seq_len {seq_len} must be divisible by segment_size {segment_size}")
        self.seq_len, self.segment_size, self.channels = int(seq_len), int(segment_size), int(channels)
        self.num_tokens = self.seq_len // self.segment_size
        self.patch_dim = self.segment_size * self.channels
        self.proj = nn.Linear(self.patch_dim, dim)

    def patchify(self, x: Tensor) -> Tensor:
        """[B, T, C] -> [B, T/s, s*C] (DABS's ``b (n s) c -> b n (s c)``)."""
        return x.reshape(x.shape[0], self.num_tokens, self.patch_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.patchify(x))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: [T, C]."""
        return (self.seq_len, self.channels)

    def spec(self) -> dict:
        return {
            "type": "segments1d",
            "seq_len": self.seq_len,
            "segment_size": self.segment_size,
            "channels": self.channels,
        }


class TokenEmbedding(nn.Module):
    """Lookup table for token ids [B, L] (text)."""

    def __init__(self, dim: int, seq_len: int, vocab_size: int) -> None:
        super().__init__()
        self.seq_len, self.vocab_size = int(seq_len), int(vocab_size)
        self.num_tokens = self.seq_len
        self.table = nn.Embedding(self.vocab_size, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.table(x.long())

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: [L] token ids."""
        return (self.seq_len,)

    def spec(self) -> dict:
        return {"type": "tokens", "seq_len": self.seq_len, "vocab_size": self.vocab_size}


class MultiInputEmbedding(nn.Module):
    """Embeds several inputs (e.g. image + question) and concatenates them along the sequence.

    A single-input domain is the one-element case, so the encoder always talks to this.
    """

    def __init__(self, embedders: Sequence[nn.Module]) -> None:
        super().__init__()
        if not embedders:
            raise UserError("a domain needs at least one input embedder")
        self.embedders = nn.ModuleList(embedders)
        self.num_tokens = sum(e.num_tokens for e in self.embedders)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        if len(inputs) != len(self.embedders):
            raise ValueError(f"expected {len(self.embedders)} inputs, got {len(inputs)}")
        return torch.cat([embed(x) for embed, x in zip(self.embedders, inputs)], dim=1)

    def spec(self) -> list[dict]:
        return [e.spec() for e in self.embedders]

    def input_problem(self, example: Sequence[Tensor]) -> str | None:
        """What is wrong with one example's inputs (no batch dimension) for these embedders, or None."""
        if len(example) != len(self.embedders):
            return f"the data give {len(example)} inputs per example but 'inputs' lists {len(self.embedders)}"
        for i, (embedder, x) in enumerate(zip(self.embedders, example)):
            if tuple(x.shape) != tuple(embedder.input_shape):
                return (
                    f"inputs[{i}] ({type(embedder).__name__}) expects examples of shape "
                    f"{list(embedder.input_shape)} but the data give {list(x.shape)}"
                )
        return None
