from __future__ import annotations

import pytest
import torch

from skylink_model.model import get_skylink_model
from skylink_model.rerank import PixelCache, rerank_order, rerank_query, rerank_topk


@pytest.fixture
def model(tiny_config):
    m = get_skylink_model(tiny_config)
    # make the adapters non-zero so both towers' LoRA contribute to the compared scores
    with torch.no_grad():
        for name, p in m.lora_parameters().items():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return m.eval()


@pytest.mark.parametrize("batch_size", [3, 16])
def test_shared_vision_equals_naive(model, images, batch_size):
    query, cands = images[0], images[1:]
    naive = rerank_query(model, query, cands, batch_size=batch_size, shared_vision=False, shared_prefix=False)
    shared = rerank_query(model, query, cands, batch_size=batch_size, shared_vision=True, shared_prefix=False)
    assert naive.shape == (7,) and naive.dtype == torch.float32
    assert torch.allclose(shared, naive, atol=1e-5), (shared - naive).abs().max()


def test_shared_vision_gradients_equal_naive(model, images):
    """Training through score_group: reusing the query features gives the same loss and LoRA gradients."""
    labels = torch.tensor([1.0, 0.0, 0.5, 0.0])
    grads = []
    for shared in (False, True):
        model.zero_grad()
        scores = model.score_group(images[0], images[1:5], shared_vision=shared)
        torch.nn.functional.binary_cross_entropy_with_logits(scores, labels).backward()
        grads.append({n: p.grad.clone() for n, p in model.lora_parameters().items()})
    assert any(".visual." in n and g.abs().sum() > 0 for n, g in grads[1].items())
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name], g, atol=1e-6), name


def test_pixel_cache_reuses_gallery_images(model, images):
    cache = PixelCache(max_items=4)
    keys = [f"g{i}" for i in range(1, 6)]
    first = rerank_query(model, images[0], images[1:6], candidate_keys=keys, cache=cache)
    again = rerank_query(model, images[0], images[1:6], candidate_keys=keys, cache=cache)
    assert torch.equal(first, again)
    assert len(cache) == 4 and cache.misses >= 5
    plain = rerank_query(model, images[0], images[1:6])
    assert torch.allclose(first, plain, atol=1e-6)


def test_rerank_order_breaks_ties_by_retriever_rank():
    assert rerank_order([0.5, 0.9, 0.5, 0.9]) == [1, 3, 0, 2]
    assert rerank_order(torch.tensor([1.0, 1.0, 2.0]), retriever_ranks=[2, 1, 3]) == [2, 1, 0]


def test_rerank_topk(model, images):
    ids = [f"c{i}" for i in range(7)]
    retriever_scores = [0.1, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]  # c0 is last by the retriever
    order = rerank_topk(model, images[0], ids, images[1:], retriever_scores, top_k=4)
    assert sorted(order) == ["c1", "c2", "c3", "c4"]
    scores = rerank_query(model, images[0], [images[2], images[3], images[4], images[5]], shared_vision=False)
    expected = [["c1", "c2", "c3", "c4"][i] for i in sorted(range(4), key=lambda i: (-scores[i].item(), i))]
    assert order == expected


def test_rerank_is_deterministic_with_a_constant_head(model, images):
    with torch.no_grad():
        model.value_head.weight.zero_()  # every score 0: the retriever order must come back
    ids = ["a", "b", "c"]
    assert rerank_topk(model, images[0], ids, images[1:4], [0.3, 0.2, 0.9]) == ["c", "a", "b"]
