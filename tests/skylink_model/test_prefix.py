"""Shared-prefix scoring and training (skylink_model.prefix) against the naive per-pair path, in float32."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from skylink_model import prefix as prefix_mod
from skylink_model.model import get_skylink_model
from skylink_model.rerank import FeatureCache, PixelCache, rerank_query


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturb_lora(model) -> None:
    """Non-zero adapters so both towers' LoRA shape the compared scores and gradients."""
    with torch.no_grad():
        for name, p in model.lora_parameters().items():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))


@pytest.fixture
def model(tiny_config):
    m = get_skylink_model(dataclasses.replace(tiny_config, head_init="random", lora_dropout=0.0))
    _perturb_lora(m)
    return m.eval()


def test_tiny_qwen2_vl_supports_the_shared_prefix(model):
    assert model.supports_shared_prefix


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_scores_equal_the_naive_path(model, images, k, chunk_size):
    """Candidates of different token counts (4 to 16 image tokens) make left-padded continuations."""
    query, cands = images[0], images[1 : 1 + k]
    with torch.no_grad():
        naive = model(**model.build_pair_inputs([query] * k, cands))
        query_p, cands_p = model.process_images([query])[0], model.process_images(cands)
        inputs = model.group_inputs(query_p, cands_p, chunk_size=chunk_size)
        fast = model(**inputs)
    assert fast.shape == (k,) and fast.dtype == torch.float32
    if k > 1:
        assert not bool(inputs["attention_mask"].all())  # padding really is exercised
    assert torch.allclose(fast, naive, atol=1e-5, rtol=0), (fast - naive).abs().max()


def test_positions_are_the_whole_pairs_positions_sliced(model, images):
    """Prefix + continuation positions equal get_rope_index on the processor's own (unpadded) pair."""
    query, cands = images[0], images[1:4]
    inputs = model.group_inputs(model.process_images([query])[0], model.process_images(cands))
    n_prefix = inputs["prefix_input_ids"].shape[1]
    for i, cand in enumerate(cands):
        pair = model.build_pair_inputs([query], [cand])
        expected, _ = model.base.get_rope_index(
            pair["input_ids"], pair["mm_token_type_ids"], image_grid_thw=pair["image_grid_thw"]
        )
        real = inputs["attention_mask"][i].bool()
        got = torch.cat([inputs["prefix_position_ids"][:, 0], inputs["position_ids"][:, i, real]], dim=1)
        got_ids = torch.cat([inputs["prefix_input_ids"][0], inputs["input_ids"][i, real]])
        assert torch.equal(got_ids, pair["input_ids"][0])
        assert torch.equal(got, expected[:, 0]), i
        assert got.shape[1] > n_prefix


def test_prefix_cache_is_a_view_not_k_copies(model, images):
    """The cache hands the k rows views of the one prefix row (stride 0 over the batch)."""
    query, cands = images[0], images[1:5]
    inputs = model.group_inputs(model.process_images([query])[0], model.process_images(cands))
    keys = torch.randn(1, 2, 9, 16)
    layer = prefix_mod._ShareLayer(keys, keys.clone(), batch=4)
    expanded = layer.keys.expand(4, *keys.shape[1:])
    assert expanded.stride(0) == 0 and expanded.data_ptr() == keys.data_ptr()
    out, _ = layer.update(torch.randn(4, 2, 3, 16), torch.randn(4, 2, 3, 16))
    assert out.shape == (4, 2, 12, 16) and torch.equal(out[:, :, :9], expanded)
    assert layer.get_seq_length() == 9 and layer.keys.shape[0] == 1  # never written
    assert inputs["prefix_input_ids"].shape[0] == 1


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_training_loss_and_lora_gradients_equal_the_naive_path(tiny_config, images, gradient_checkpointing):
    """One group = one forward (prefix + k continuations, in chunks) + one backward; BCE (Eq. 8) and every LoRA /
    head gradient equal the naive path's."""
    config = dataclasses.replace(
        tiny_config, head_init="random", lora_dropout=0.0, gradient_checkpointing=gradient_checkpointing
    )
    model = get_skylink_model(config).train()
    _perturb_lora(model)
    query, cands = images[0], images[1:6]
    labels = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.2])
    results = {}
    for mode, chunk in (("naive", None), ("fast", None), ("fast-chunked", 2)):
        model.zero_grad(set_to_none=True)
        if mode == "naive":
            scores = model(**model.build_pair_inputs([query] * 5, cands))
        else:
            query_p, cands_p = model.process_images([query])[0], model.process_images(cands)
            inputs = model.group_inputs(query_p, cands_p, chunk_size=chunk)
            scores = model(**inputs)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[mode] = (loss.detach(), grads)
    loss0, grads0 = results["naive"]
    assert any(".visual." in n for n in grads0) and any("language_model" in n for n in grads0)
    assert "value_head.weight" in grads0
    for mode in ("fast", "fast-chunked"):
        loss, grads = results[mode]
        assert torch.allclose(loss, loss0, atol=1e-6), mode
        assert set(grads) == set(grads0), mode
        for name, g in grads0.items():
            assert torch.allclose(grads[name], g, atol=1e-6, rtol=1e-4), (mode, name, (grads[name] - g).abs().max())


def test_rerank_query_defaults_to_the_shared_prefix_and_matches_naive(model, images):
    query, cands = images[0], images[1:]
    naive = rerank_query(model, query, cands, shared_prefix=False, shared_vision=False)
    keys = [f"g{i}" for i in range(len(cands))]
    cache, features = PixelCache(), FeatureCache(max_bytes=1 << 20)
    fast = rerank_query(model, query, cands, batch_size=3, candidate_keys=keys, cache=cache, feature_cache=features)
    again = rerank_query(model, query, cands, batch_size=3, candidate_keys=keys, cache=cache, feature_cache=features)
    assert torch.allclose(fast, naive, atol=1e-5, rtol=0)
    assert torch.equal(fast, again)
    assert features.misses == len(cands) and features.hits == len(cands)


def test_feature_cache_is_bounded_in_bytes(model, images):
    processed = model.process_images(images[:4])  # 16, 4, 9, 8 tokens × 64 floats
    sizes = [p.num_patches // 4 * 64 * 4 for p in processed]
    cache = FeatureCache(max_bytes=sizes[0] + sizes[2])  # a + b fit, a + b + c do not, a + c do
    with torch.inference_mode():
        cache.get_or_encode(model, ["a", "b"], processed[:2])
        assert cache.nbytes == sizes[0] + sizes[1] and len(cache) == 2
        cache.get_or_encode(model, ["a"], processed[:1])  # a is now most recent
        cache.get_or_encode(model, ["c"], processed[2:3])  # evicts b (least recent), keeps a
        assert "b" not in cache._items and "a" in cache._items and cache.nbytes <= cache.max_bytes
        direct = model.encode_images(processed[2:3])[0]
        assert torch.equal(cache.get_or_encode(model, ["c"], processed[2:3])[0], direct)


def test_feature_cache_refuses_changing_vision_weights(model, images):
    processed = model.process_images(images[:1])
    cache = FeatureCache()
    model.train()
    with pytest.raises(RuntimeError, match="training mode"):
        cache.get_or_encode(model, ["a"], processed)
    model.eval()
    with pytest.raises(RuntimeError, match="frozen vision"):
        cache.get_or_encode(model, ["a"], processed)  # autograd on, vision LoRA trainable


def test_unsupported_family_falls_back_once_with_a_log_line(model, images, caplog, monkeypatch):
    monkeypatch.setattr(model, "spec", dataclasses.replace(model.spec, shared_prefix=False))
    monkeypatch.setattr(prefix_mod, "_WARNED", set())
    assert not model.supports_shared_prefix
    with caplog.at_level(logging.WARNING, logger="skylink_model.prefix"):
        first = rerank_query(model, images[0], images[1:4])
        rerank_query(model, images[0], images[1:4])
    assert sum("shared-prefix scoring is not available" in r.message for r in caplog.records) == 1
    naive = rerank_query(model, images[0], images[1:4], shared_prefix=False, shared_vision=False)
    assert torch.allclose(first, naive, atol=1e-5)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    from skylink_model.testing import make_tiny_model

    root = tmp_path_factory.mktemp("families")
    return {f: make_tiny_model(root / f, family=f) for f in ("qwen2_5_vl", "qwen3_vl", "llava_onevision")}


def _family_model(folder, **kw):
    from skylink_model.config import SkyLinkConfig

    model = get_skylink_model(SkyLinkConfig(base_model=str(folder), head_init="random", lora_dropout=0.0, **kw))
    _perturb_lora(model)
    return model


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava_onevision"])
def test_every_family_scores_on_the_shared_prefix_as_the_naive_path(family_dirs, images, family):
    """Qwen2.5-VL (windowed vision attention), Qwen3-VL (interleaved M-RoPE, DeepStack features cached with the
    merger output) and LLaVA-OneVision (1-D RoPE, image-newline rows, images larger than the base resolution that
    the single-image path would tile): rerank_query with warm pixel and feature caches equals every pair in full."""
    model = _family_model(family_dirs[family]).eval()
    assert model.supports_shared_prefix and model.supports_shared_vision
    query, cands = images[0], images[1:]
    naive = rerank_query(model, query, cands, shared_prefix=False, shared_vision=False)
    keys = [f"g{i}" for i in range(len(cands))]
    cache, features = PixelCache(), FeatureCache()
    fast = rerank_query(model, query, cands, batch_size=3, candidate_keys=keys, cache=cache, feature_cache=features)
    warm = rerank_query(model, query, cands, batch_size=3, candidate_keys=keys, cache=cache, feature_cache=features)
    assert features.hits == len(cands) and torch.equal(fast, warm)
    assert (fast - naive).abs().max() <= 1e-5, (fast - naive).abs().max()
    with torch.no_grad():
        assert torch.allclose(model.score_group(query, cands), naive, atol=1e-5)  # mm_encoder_outputs reuse

    processed = model.process_images([query, *cands[:2]])
    reference = model.build_pair_inputs([query] * 2, cands[:2])
    built = model.pair_inputs_from_processed([processed[0]] * 2, processed[1:])
    for key, value in built.items():
        assert torch.equal(value, reference[key]), key
    with torch.inference_mode():
        feats = model.encode_images(processed[:1])[0]
    levels = len(getattr(model.base.config.vision_config, "deepstack_visual_indexes", None) or [])
    assert feats.shape == (processed[0].tokens, model.hidden_size * (1 + levels))
    if family == "qwen3_vl":  # the DeepStack levels change the scores: losing them on the way would be caught
        assert levels == 1
        h = model.hidden_size
        with torch.inference_mode():
            qf, *cf = model.encode_images(processed)
            with_levels = model(**model.group_inputs(processed[0], processed[1:], query_features=qf,
                                                     candidate_features=cf))  # fmt: skip
            qf[:, h:], cf[0][:, h:], cf[1][:, h:] = 0, 0, 0
            without = model(**model.group_inputs(processed[0], processed[1:], query_features=qf,
                                                 candidate_features=cf))  # fmt: skip
        assert (without - with_levels).abs().max() > 1e-4
    if family == "llava_onevision":  # features + one newline row, by the processor's multi-image rule
        assert processed[0].tokens == model.processor.num_image_tokens + 1


@pytest.mark.parametrize("family", ["qwen3_vl", "llava_onevision"])
@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_every_family_trains_on_the_shared_prefix_as_the_naive_path(family_dirs, images, family,
                                                                    gradient_checkpointing):  # fmt: skip
    """One group's loss and every LoRA / head gradient (both towers) on the shared prefix, in chunks, equal the
    per-pair path's, relative 1e-3."""
    model = _family_model(family_dirs[family], gradient_checkpointing=gradient_checkpointing).train()
    query, cands = images[0], images[1:6]
    labels = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.2])
    results = {}
    for mode in ("naive", "fast"):
        model.zero_grad(set_to_none=True)
        if mode == "naive":
            scores = model(**model.build_pair_inputs([query] * 5, cands))
        else:
            inputs = model.group_inputs(model.process_images([query])[0], model.process_images(cands), chunk_size=2)
            scores = model(**inputs)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)
        loss.backward()
        results[mode] = loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    (loss0, grads0), (loss1, grads1) = results["naive"], results["fast"]
    vision = model.spec.vision_prefix.split(".")[-1]
    assert any(f".{vision}." in n for n in grads0) and any("language_model" in n for n in grads0)
    assert torch.allclose(loss1, loss0, atol=1e-6) and set(grads1) == set(grads0)
    for name, g in grads0.items():
        rel = (grads1[name] - g).norm() / g.norm().clamp_min(1e-12)
        assert rel <= 1e-3, (name, float(rel))


def test_reentrant_gradient_checkpointing_is_refused(tiny_config, images):
    """Reentrant checkpointing would silently drop the prefix's gradients: a clear error instead."""
    model = get_skylink_model(dataclasses.replace(tiny_config, lora_dropout=0.0)).train()
    base = model.backbone.get_base_model()
    enable = getattr(base, "activation_checkpointing_enable", None)  # the old name warns in newer transformers
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": True})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    inputs = model.group_inputs(model.process_images(images[:1])[0], model.process_images(images[1:3]))
    with pytest.raises(ValueError, match="non-reentrant"):
        model(**inputs)
    with torch.no_grad():  # no backward, nothing to lose: allowed
        assert model(**inputs).shape == (2,)


def test_thread_tuner_measures_both_thread_counts_then_keeps_the_faster_and_re_measures():
    """The fast path's thread count is chosen by measurement (issue 19: on a busy machine one thread can beat two)."""
    tuner = prefix_mod.ThreadTuner(explore_every=4)
    assert tuner.choose(2) == 2
    tuner.record(2, seconds=3.0, work=10)
    assert tuner.choose(2) == 1  # the other count is measured before any choice
    tuner.record(1, seconds=1.0, work=10)
    picks = [tuner.choose(2) for _ in range(8)]
    assert picks.count(1) == 6 and picks.count(2) == 2  # the faster, and the other every 4th group
    for _ in range(3):  # the load changes: two threads become faster; the average follows
        tuner.record(2, seconds=0.2, work=10)
    assert tuner.choose(2) == 2
    assert prefix_mod.ThreadTuner().choose(1) == 1  # nothing to choose on one thread
    off = prefix_mod.ThreadTuner(enabled=False)
    off.record(2, seconds=9.0, work=1)
    assert [off.choose(2) for _ in range(7)] == [2] * 7


def test_tuned_threads_restores_torchs_thread_count(model, images):
    torch.set_num_threads(2)
    model.__dict__.pop("_thread_tuners", None)
    seen = []
    with torch.no_grad():
        for _ in range(3):
            with prefix_mod.tuned_threads(model, work=4) as threads:
                seen.append((threads, torch.get_num_threads()))
            assert torch.get_num_threads() == 2
    assert seen[:2] == [(2, 2), (1, 1)]  # both measured first
    with prefix_mod.tuned_threads(model, work=4) as threads:  # autograd on: training's own tuner
        assert threads == 2
    assert set(model._thread_tuners) == {"score", "train"}
    assert set(model._thread_tuners["score"].seconds_per_work) == {1, 2}
    torch.set_num_threads(1)


def test_set_thread_tuning_off_keeps_torchs_count_so_scores_repeat_bit_for_bit(model, images):
    """Off (benchmarks' before/after, real_shapes' reload check): every group on torch's count, scores identical."""
    torch.set_num_threads(2)
    model.__dict__.pop("_thread_tuners", None)
    prefix_mod.set_thread_tuning(model, False)
    seen = []
    with torch.no_grad():
        for _ in range(3):
            with prefix_mod.tuned_threads(model, work=4) as threads:
                seen.append(threads)
    assert seen == [2, 2, 2]
    assert not any(t.enabled for t in prefix_mod.thread_tuners(model).values())
    first = rerank_query(model, images[0], images[1:4])
    assert torch.equal(rerank_query(model, images[0], images[1:4]), first)
    prefix_mod.set_thread_tuning(model, True)
    assert all(t.enabled for t in prefix_mod.thread_tuners(model).values())
    torch.set_num_threads(1)
