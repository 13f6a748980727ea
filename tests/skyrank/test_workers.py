"""Forked DataLoader workers never collect what they inherited (skyrank.workers)."""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from skyrank.benchmarks import ImageRecord
from skyrank.retrievers import create
from skyrank.retrievers.encode import encode_records

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DataLoader workers fork on Linux")


def test_a_worker_does_not_destroy_the_parents_thread_owning_garbage(tmp_path, monkeypatch) -> None:
    """The CI failure of session 6: a rendezvous TCPStore (its server runs on a thread of this process) left in a
    reference cycle, collected in a DataLoader worker after the worker started a thread, aborted the worker."""
    from torch.distributed import TCPStore

    records = []
    for i in range(4):
        rel = f"gallery/{i}.png"
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((20, 20, 3), 40 * i, dtype=np.uint8)).save(tmp_path / rel)
        records.append(ImageRecord(rel, str(i), "satellite"))
    torch.manual_seed(0)
    retriever = create("sample4geo", arch="convnext_atto", image_size=32, random_weights=True)
    preprocess = retriever.preprocess_view
    parent = os.getpid()
    calls = [0]

    def collecting_preprocess(img, view):
        calls[0] += 1
        if os.getpid() != parent and calls[0] > 1:
            gc.collect()  # in the worker, once its queue thread runs (from the second image on)
        return preprocess(img, view)

    monkeypatch.setattr(retriever, "preprocess_view", collecting_preprocess)
    gc.disable()
    try:
        cycle: list = [TCPStore("127.0.0.1", 0, 1, True, wait_for_workers=False)]
        cycle.append(cycle)
        del cycle
        res = encode_records(retriever, tmp_path, records, "satellite", batch_size=1, num_workers=1, progress=False)
        assert res.ids == [r.image_id for r in records] and res.bad == []
    finally:
        gc.enable()
        gc.collect()  # the store goes here, where its thread is
