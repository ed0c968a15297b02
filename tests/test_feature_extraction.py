"""Cached-mode feature extraction: ``trainer.predict`` over this rank's share of the batches, the shares
gathered back into the split's order, so N ranks split the work and all end with every feature once."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dabs_rq.data.tensor_dataset import TensorInputsDataset
from dabs_rq.transfer import extract_features


class _Pool(nn.Module):
    """A stand-in encoder: mean over tokens, so each feature row identifies its example."""

    dim = 3

    def forward(self, inputs):
        return inputs[0].float().mean(dim=1)


def _trainer(rank: int, world: int, gather, seen: list | None = None) -> SimpleNamespace:
    def predict(module, dataloaders, return_predictions=True):
        module.eval()
        with torch.no_grad():
            out = [module.predict_step(batch, i) for i, batch in enumerate(dataloaders)]
        if seen is not None:
            seen.append(sum(len(y) for _, y in out))
        return out

    strategy = SimpleNamespace(root_device=torch.device("cpu"), all_gather=gather)
    return SimpleNamespace(global_rank=rank, world_size=world, predict=predict, strategy=strategy)


@pytest.mark.parametrize("n, batch, world", [(23, 4, 2), (24, 4, 2), (7, 4, 3), (5, 8, 2), (30, 4, 3)])
def test_sharded_extraction_gathers_every_example_once_in_order(n, batch, world):
    x = torch.randn(n, 5, 3)
    labels = torch.arange(n) * 10
    dataset = TensorInputsDataset([x], labels)
    expected = extract_features(_trainer(0, 1, None), _Pool(), dataset, batch)

    # every rank's padded share, as all_gather would collect it (in call order: features, then labels)
    shares: list[list[torch.Tensor]] = []
    encoded: list[int] = []  # examples each rank encoded
    for rank in range(world):
        calls: list[torch.Tensor] = []
        extract_features(
            _trainer(rank, world, lambda t, calls=calls: (calls.append(t), torch.stack([t] * world))[1], encoded),
            _Pool(),
            dataset,
            batch,
        )
        shares.append(calls)
    for rank in range(world):
        gathered = iter([torch.stack([shares[r][i] for r in range(world)]) for i in range(2)])
        out = extract_features(_trainer(rank, world, lambda t: next(gathered)), _Pool(), dataset, batch)
        torch.testing.assert_close(out.inputs[0], expected.inputs[0])
        assert torch.equal(out.labels, labels)
    # each rank encoded only its share (batch b on rank b mod world): the work is split, none repeated
    assert sum(encoded) == n and max(encoded) - min(encoded) <= batch
