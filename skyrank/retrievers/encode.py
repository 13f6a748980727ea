"""Stream benchmark images through a retriever: decoding in DataLoader workers, embedding in batches.

Only embeddings are kept in memory (``N x D`` float32), never the decoded images. A file that fails to decode does
not kill a worker: the dataset returns a flag and the encoder collects every bad path, then either raises
:class:`~skyrank.errors.BadImageError` listing all of them (default) or drops them (``skip_bad_images=True``).
The embeddings are what Eq. 1 of SkyLink (arXiv 2603.08063) ranks by inner product: L2-normalised, float32.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from skyrank.benchmarks._base import ImageRecord
from skyrank.errors import BadImageError
from skyrank.images import get_max_pixels, open_rgb
from skyrank.retrievers._base import Retriever, check_view
from skyrank.workers import worker_init

_AMP = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}
_SHOW_BAD = 50  # bad paths listed in full in the error message (all are in ``BadImageError.paths``)


@dataclass
class EncodeResult:
    """Embeddings of a list of records, in record order (bad images removed when skipped).

    Attributes:
        ids: ``image_id`` of each row.
        embeddings: ``(N, D)`` float32, L2-normalised.
        bad: ``image_id`` of every image that failed to decode (empty unless ``skip_bad_images``).
        decode_seconds: time the main process waited for the DataLoader (decoding + preprocessing not hidden by
            workers).
        encode_seconds: time spent in the retriever's forward pass (including the copy back to the CPU).
    """

    ids: list[str]
    embeddings: np.ndarray
    bad: list[str] = field(default_factory=list)
    decode_seconds: float = 0.0
    encode_seconds: float = 0.0


class _ImageDataset(Dataset):
    """``(index, tensor, error)``; ``error`` is ``""`` when the image decoded, else the reason (tensor is zeros)."""

    def __init__(
        self,
        root: Path,
        image_ids: Sequence[str],
        preprocessor: Retriever,
        max_pixels: int | None = None,
        view: str = "drone",
    ) -> None:
        self.root = root
        self.image_ids = list(image_ids)
        self.preprocessor = preprocessor
        self.view = view
        self.max_pixels = get_max_pixels() if max_pixels is None else int(max_pixels)  # travels to the workers
        self._blank = torch.zeros(3, *preprocessor.input_size(view))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, str]:
        try:
            img = open_rgb(self.root / self.image_ids[index], max_pixels=self.max_pixels)  # the one bounded decoder
        except BadImageError as e:  # missing, dangling link, not an image, truncated, over the pixel budget, ...
            return index, self._blank, str(e)
        try:
            return index, self.preprocessor.preprocess_view(img, self.view), ""
        except Exception as e:  # a preprocessing failure on a decoded image
            return index, self._blank, f"{type(e).__name__}: {e}"


def _preprocess_only(retriever: Retriever) -> Retriever:
    """A shallow copy without the model, so DataLoader workers never pickle the weights."""
    light = copy.copy(retriever)
    if "model" in light.__dict__:
        light.__dict__["model"] = None
    return light


def _bad_image_error(bad: list[tuple[str, str]], root: Path) -> BadImageError:
    lines = [f"  {path}  ({reason})" for path, reason in bad[:_SHOW_BAD]]
    if len(bad) > _SHOW_BAD:
        lines.append(f"  ... and {len(bad) - _SHOW_BAD} more (see BadImageError.paths)")
    msg = f"{len(bad)} image(s) under {root} could not be decoded:\n" + "\n".join(lines)
    return BadImageError(
        msg,
        paths=[p for p, _ in bad],
        hint="Fix or remove the listed files, or pass --skip-bad-images (skip_bad_images=True) to leave them out "
        "of the dataset (they are then listed in the summary and the card).",
    )


@dataclass
class _Collected:
    """What one pass over the records saw, before the bad-image policy is applied."""

    ids: list[str]
    embeddings: np.ndarray  # (N, D), rows of bad images are embeddings of a blank image
    ok: np.ndarray  # (N,) bool, False for images that failed to decode
    bad: list[tuple[str, str]]  # (image_id, reason) in record order
    decode_seconds: float = 0.0
    encode_seconds: float = 0.0

    def apply_policy(self, root: Path, skip_bad_images: bool) -> EncodeResult:
        """Raise :class:`BadImageError` listing every bad image, or drop them (``skip_bad_images``)."""
        if self.bad and not skip_bad_images:
            raise _bad_image_error(self.bad, root)
        emb, ids = self.embeddings, self.ids
        if self.bad:
            emb = emb[self.ok]
            ids = [i for i, keep in zip(ids, self.ok, strict=True) if keep]
        return EncodeResult(
            ids=ids,
            embeddings=emb,
            bad=[p for p, _ in self.bad],
            decode_seconds=self.decode_seconds,
            encode_seconds=self.encode_seconds,
        )


def encode_records(
    retriever: Retriever,
    root: str | Path,
    records: Sequence[ImageRecord],
    view: str,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    skip_bad_images: bool = False,
    max_pixels: int | None = None,
    progress: bool = True,
    desc: str | None = None,
    amp: str = "fp16",
) -> EncodeResult:
    """Embed ``records`` (images under ``root``) with ``retriever`` as the ``view`` encoder.

    Args:
        retriever: any :class:`~skyrank.retrievers.Retriever`; ``needs_images = False`` retrievers are asked for
            ``embed_ids`` instead.
        root: the benchmark root; ``record.image_id`` is relative to it.
        records: the images, in the order the rows are wanted.
        view: ``"drone"``, ``"satellite"`` or ``"ground"`` (the retriever preprocesses each view its way).
        batch_size: images per forward pass.
        num_workers: DataLoader worker processes decoding images.
        skip_bad_images: drop images that fail to decode (returned in ``bad``) instead of raising.
        progress: show a tqdm bar.
        desc: the bar's label.
        amp: autocast dtype on CUDA, ``"fp16"`` (default, as Sample4Geo), ``"bf16"`` or ``"fp32"``; the CPU always
            runs in float32.

    Raises:
        BadImageError: some images did not decode and ``skip_bad_images`` is false; lists every one of them.
    """
    collected = _encode_collect(
        retriever,
        Path(root),
        records,
        view,
        batch_size=batch_size,
        num_workers=num_workers,
        max_pixels=max_pixels,
        progress=progress,
        desc=desc,
        amp=amp,
    )
    return collected.apply_policy(Path(root), skip_bad_images)


def _encode_collect(
    retriever: Retriever,
    root: Path,
    records: Sequence[ImageRecord],
    view: str,
    *,
    batch_size: int,
    num_workers: int,
    max_pixels: int | None = None,
    progress: bool,
    desc: str | None,
    amp: str,
) -> _Collected:
    """The streaming pass of :func:`encode_records`: every row embedded, bad images flagged, nothing raised."""
    check_view(view)
    if amp not in _AMP:
        raise ValueError(f"amp must be one of {sorted(_AMP)}, got {amp!r}")
    ids = [r.image_id for r in records]
    ok = np.ones(len(ids), dtype=bool)
    if not retriever.needs_images:
        t0 = time.perf_counter()
        emb = np.ascontiguousarray(retriever.embed_ids(ids, view), dtype=np.float32)
        return _Collected(ids=ids, embeddings=emb, ok=ok, bad=[], encode_seconds=time.perf_counter() - t0)

    device = torch.device(getattr(retriever, "device", "cpu"))
    on_cuda = device.type == "cuda"
    loader = DataLoader(
        _ImageDataset(root, ids, _preprocess_only(retriever), max_pixels, view),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=on_cuda,
        persistent_workers=False,
        worker_init_fn=worker_init,
    )
    emb: np.ndarray | None = None
    bad: list[tuple[str, str]] = []
    decode_s = encode_s = 0.0
    dtype = _AMP[amp]
    autocast = torch.autocast("cuda", dtype=dtype) if on_cuda and dtype is not None else nullcontext()

    from tqdm.auto import tqdm

    bar = tqdm(total=len(ids), desc=desc or f"encode {view}", unit="img", disable=not progress, leave=False)
    retriever.eval()
    it = iter(loader)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                index, x, errors = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            decode_s += t1 - t0
            with torch.inference_mode(), autocast:
                out = retriever.embed(x.to(device, non_blocking=True), view)
            out = out.float().cpu().numpy()
            encode_s += time.perf_counter() - t1
            if emb is None:
                emb = np.empty((len(ids), out.shape[1]), dtype=np.float32)
            idx = index.numpy()
            emb[idx] = out
            for i, err in zip(idx.tolist(), errors, strict=True):
                if err:
                    ok[i] = False
                    bad.append((ids[i], err))
            bar.update(len(idx))
    finally:
        bar.close()
        del it
    if emb is None:  # no records
        emb = np.zeros((0, retriever.embed_dim), dtype=np.float32)
    return _Collected(ids=ids, embeddings=emb, ok=ok, bad=bad, decode_seconds=decode_s, encode_seconds=encode_s)
