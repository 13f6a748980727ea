"""Multi-process encoding: two CPU processes (gloo) give one process's embeddings, bad images gathered across ranks.

Every process runs with the same number of CPU threads (``OMP_NUM_THREADS=1``) as the one-process reference: with
batch-aligned slices every forward pass then sees the same batch with the same kernels, and the embeddings are
bitwise equal. (With different thread counts the last bits may differ, about 2e-9.)
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skyrank.benchmarks import ImageRecord
from skyrank.errors import BadImageError
from skyrank.retrievers import Retriever, create
from skyrank.retrievers.distributed import (
    RetrieverSpec,
    batch_aligned_slices,
    current_context,
    encode_records_distributed,
    encode_spec,
    init_distributed,
    is_distributed,
    launch,
)
from skyrank.retrievers.encode import encode_records

SIZE = 32
BATCH = 2
N = 11  # batches of 2 → rank 0 encodes records 0-5, rank 1 records 6-10
BAD = (1, 8)  # one bad image in each rank's slice


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[ImageRecord]]:
    """(clean root, root with a corrupt image in each rank's slice, records)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    records = []
    for i in range(N):
        rel = f"test/gallery_satellite/{i:04d}/{i:04d}.jpg"
        (root / rel).parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (36 + i, 40, 3), dtype=np.uint8)).save(root / rel)
        records.append(ImageRecord(rel, f"{i:04d}", "satellite"))
    bad_root = tmp_path_factory.mktemp("bad") / "root"
    shutil.copytree(root, bad_root)
    (bad_root / records[BAD[0]].image_id).write_bytes(b"\xff\xd8\xff\xe0 truncated" * 4)
    (bad_root / records[BAD[1]].image_id).write_bytes(b"")
    return root, bad_root, records


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> RetrieverSpec:
    """Random ConvNeXt-Atto weights saved as a Sample4Geo checkpoint, rebuilt by each process."""
    torch.manual_seed(0)
    r = create("sample4geo", arch="convnext_atto", image_size=SIZE, random_weights=True)
    ckpt = tmp_path_factory.mktemp("ckpt") / "weights.pth"
    torch.save(r.model.state_dict(), ckpt)
    return RetrieverSpec("sample4geo", str(ckpt), {"arch": "convnext_atto", "image_size": SIZE})


@pytest.fixture(scope="module")
def model(spec: RetrieverSpec) -> Retriever:
    """The one-process reference retriever, built from the checkpoint like the workers build theirs."""
    return spec.create()


def _clean_and_skip_job(spec: RetrieverSpec, root: str, bad_root: str, records: list[ImageRecord]) -> tuple:
    """Run in each of the launched processes: the clean images, then the bad ones with ``skip_bad_images``."""
    ctx = init_distributed("cpu")
    r = spec.create(ctx.device)
    clean = encode_records_distributed(r, root, records, "satellite", batch_size=BATCH, progress=False)
    skipped = encode_records_distributed(
        r, bad_root, records, "satellite", batch_size=BATCH, skip_bad_images=True, progress=False
    )
    assert (clean is None) == (skipped is None) == (not ctx.is_main)
    return ctx.world_size, clean, skipped


@pytest.fixture(scope="module")
def one_process(images, spec, model) -> Iterator[tuple]:
    """One-process references on one thread; then the two-process run (one launch), each worker on one thread."""
    root, bad_root, records = images
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # inherited by the workers
        torch.set_num_threads(1)
        try:
            clean = encode_records(model, root, records, "satellite", batch_size=BATCH, progress=False)
            skipped = encode_records(
                model, bad_root, records, "satellite", batch_size=BATCH, skip_bad_images=True, progress=False
            )
            two = launch(
                _clean_and_skip_job,
                {"spec": spec, "root": str(root), "bad_root": str(bad_root), "records": records},
                2,
            )
        finally:
            torch.set_num_threads(before)
    yield (clean, skipped), two


@pytest.mark.parametrize(
    ("n", "batch", "world"), [(11, 2, 2), (10, 2, 2), (0, 4, 3), (3, 4, 2), (100, 8, 3), (7, 1, 7), (5, 1, 8)]
)
def test_batch_aligned_slices_cover_in_order_on_batch_boundaries(n: int, batch: int, world: int) -> None:
    slices = batch_aligned_slices(n, batch, world)
    assert len(slices) == world and slices[0][0] == 0 and slices[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))
    assert all(start % batch == 0 or start == n for start, _ in slices)
    sizes = [(stop - start + batch - 1) // batch for start, stop in slices]
    assert max(sizes) - min(sizes) <= 1  # even to within one batch


def test_one_process_is_encode_records(images, model) -> None:
    root, _, records = images
    assert not is_distributed() and current_context().world_size == 1
    assert init_distributed("cpu").is_main
    a = encode_records_distributed(model, root, records, "satellite", batch_size=BATCH, progress=False)
    b = encode_records(model, root, records, "satellite", batch_size=BATCH, progress=False)
    assert a is not None and a.ids == b.ids
    np.testing.assert_array_equal(a.embeddings, b.embeddings)


def test_two_processes_equal_one_process_bitwise(images, one_process) -> None:
    _, _, records = images
    (one, _), (world, two, _) = one_process
    assert world == 2
    assert two.ids == one.ids == [r.image_id for r in records] and two.bad == []
    assert two.embeddings.dtype == np.float32 and two.embeddings.shape == (N, 320)
    np.testing.assert_array_equal(two.embeddings, one.embeddings)
    assert two.encode_seconds > 0


def test_bad_images_of_every_rank_are_gathered_and_skipped_like_one_process(images, one_process) -> None:
    _, _, records = images
    bad = [records[i].image_id for i in BAD]
    (_, one), (_, _, two) = one_process
    assert one.bad == two.bad == bad
    assert two.ids == one.ids == [r.image_id for r in records if r.image_id not in bad]
    np.testing.assert_array_equal(two.embeddings, one.embeddings)


def test_bad_images_of_every_rank_raise_one_error_in_the_parent(images, spec, model, monkeypatch) -> None:
    _, bad_root, records = images
    bad = [records[i].image_id for i in BAD]
    with pytest.raises(BadImageError) as one:
        encode_records(model, bad_root, records, "drone", batch_size=BATCH, progress=False)
    gc.disable()  # what a later automatic collection would leave to a forked child, kept in sight
    # pytest keeps the launcher's log records of the failure, whose tracebacks hold its frames, until the test ends
    monkeypatch.setattr(logging.getLogger("torch.distributed.elastic"), "propagate", False)
    try:
        with pytest.raises(BadImageError) as two:
            encode_spec(spec, bad_root, records, "drone", num_processes=2, batch_size=BATCH, progress=False)
        assert one.value.paths == two.value.paths == bad
        assert str(two.value) == str(one.value) and "--skip-bad-images" in (two.value.hint or "")
        # The failed launch's rendezvous store is gone: collected in a forked child (a DataLoader worker of the
        # next encode), its destructor joined a thread the child lacks and the child aborted (CI, session 6).
        assert not [o for o in gc.get_objects() if type(o).__name__ == "C10dRendezvousBackend"]
        if hasattr(os, "fork"):
            pid = os.fork()
            if pid == 0:  # the child: a thread (as a DataLoader worker's queue feeder), then a full collection
                t = threading.Thread(target=gc.collect)
                t.start()
                t.join()
                os._exit(0)
            assert os.waitpid(pid, 0)[1] == 0
    finally:
        gc.enable()


def test_launch_with_one_process_runs_in_place() -> None:
    assert launch(dict, {"a": 1, "b": 2}, 1) == {"a": 1, "b": 2}


def test_worker_errors_round_trip_as_json_without_pickle(tmp_path) -> None:
    from skyrank.errors import SkyRankError
    from skyrank.retrievers.distributed import _dump_exception, _first_error, _load_exception

    class Custom(Exception):
        pass

    _dump_exception(tmp_path, 1, BadImageError("2 unreadable images", ["a.jpg", "b.jpg"], hint="--skip-bad-images"))
    _dump_exception(tmp_path, 0, ValueError("bad value", 3))
    first = _first_error(tmp_path)  # the lowest rank's
    assert type(first) is ValueError and first.args == ("bad value", 3)
    (tmp_path / "error-rank00000.json").unlink()
    again = _first_error(tmp_path)
    assert type(again) is BadImageError and str(again) == "2 unreadable images"
    assert again.paths == ["a.jpg", "b.jpg"] and again.hint == "--skip-bad-images"
    assert not list(tmp_path.glob("*.pkl"))
    # a type outside builtins and skyrank is never imported: it becomes a SkyRankError naming it
    _dump_exception(tmp_path / ".", 2, Custom("boom"))
    record = json.loads((tmp_path / "error-rank00002.json").read_text())
    other = _load_exception(record)
    assert type(other) is SkyRankError and "Custom: boom" in str(other) and "rank 2" in str(other)
    forged = _load_exception({"module": "subprocess", "type": "CalledProcessError", "args": [1, "x"], "rank": 0})
    assert type(forged) is SkyRankError
