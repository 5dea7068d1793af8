"""Unpadded (packed) inference equals the padded forward at every real token."""

import pytest
import torch

import slimbert
from slimbert.models.unpad import pack, unpadded_logits
from tests.pruning.test_collapse import _gated


@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_unpadded_equals_padded(arch, kernels, monkeypatch):
    monkeypatch.setenv("SLIMBERT_KERNELS", kernels)
    compact = slimbert.collapse(_gated(arch))  # one layer with no heads, one with nothing left
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, compact.config.vocab_size, (4, 11), generator=g)
    mask = torch.ones_like(ids)
    for row, length in enumerate([11, 6, 1, 9]):  # odd lengths, a one-token sequence
        mask[row, length:] = 0
    want = compact(input_ids=ids, attention_mask=mask)
    start, end = unpadded_logits(compact, ids, mask)
    keep = mask.bool()
    torch.testing.assert_close(start[keep], want.start_logits[keep], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(end[keep], want.end_logits[keep], atol=1e-4, rtol=1e-4)
    assert bool((start[~keep] < -1e3).all())  # padding positions carry PAD_LOGIT


def test_pack_refuses_left_padding():
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])
    with pytest.raises(ValueError, match="right-padded"):
        pack(mask)
    index, cu, max_len = pack(torch.tensor([[1, 1, 1], [1, 0, 0]]))
    assert index.tolist() == [0, 1, 2, 3] and cu.tolist() == [0, 3, 4] and max_len == 3
