"""The one domain-agnostic transformer and the per-domain embedding modules."""

from dabs_rq.encoder.build import build_encoder
from dabs_rq.encoder.embedders import (
    MultiInputEmbedding,
    PatchEmbedding2d,
    SegmentEmbedding1d,
    TokenEmbedding,
)
from dabs_rq.encoder.transformer import DomainAgnosticTransformer

__all__ = [
    "DomainAgnosticTransformer",
    "MultiInputEmbedding",
    "PatchEmbedding2d",
    "SegmentEmbedding1d",
    "TokenEmbedding",
    "build_encoder",
]
