"""``skyrank rerank``: re-rank candidate lists from any other tool with a trained SkyLink (arXiv 2603.08063,
"Inference": score each (query, candidate) pair, S = wᵀh_last, and sort the retriever's top-k by S).

Input, a Parquet or CSV file of image paths, in either layout:

* **long** (one row per pair): ``query`` and ``candidate`` columns (``query_path``/``candidate_path`` also work),
  and optionally ``score`` (the retriever's similarity, higher first) or ``rank`` (1 first) for the retriever order;
  without them the order of the rows is the retriever order;
* **wide** (Parquet, one row per query): ``query`` and ``candidates`` (a list of paths, in retriever order).

Relative paths are resolved under ``images_root`` (default: the file's folder). Scoring uses exactly what
``skyrank eval`` uses (:func:`skylink_model.rerank.rerank_query` with the shared prefix, the processed-pixel cache and
the gallery vision-feature cache), so a candidate shared by many queries is processed once. The output has one row
per pair: ``query``, ``candidate``, ``retriever_rank``, ``skylink_score`` (empty beyond ``top_k``) and ``rank`` (the
new 1-based order: the top-k sorted by (−S, retriever rank), then the rest in retriever order).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyrank.atomic import write_atomic
from skyrank.errors import CandidateFileError, SkyRankError

QUERY_COLUMNS: tuple[str, ...] = ("query", "query_path", "query_image")
CANDIDATE_COLUMNS: tuple[str, ...] = ("candidate", "candidate_path", "candidate_image")
OUTPUT_COLUMNS: tuple[str, ...] = ("query", "candidate", "retriever_rank", "skylink_score", "rank")


@dataclass
class RerankResult:
    """What :func:`rerank_file` wrote."""

    out: Path
    queries: int
    pairs: int
    scored: int
    ms_per_query: float


def _pick(columns: list[str], names: tuple[str, ...]) -> str | None:
    return next((c for c in names if c in columns), None)


def read_candidate_lists(path: str | Path) -> dict[str, list[str]]:
    """``{query path: [candidate paths in retriever order]}`` from a long or wide Parquet/CSV file."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise SkyRankError(f"--candidates file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - pyarrow's many error types: the file is not readable Parquet
            raise CandidateFileError(
                f"--candidates {path} is not a readable Parquet file ({type(e).__name__}: {str(e).splitlines()[0]})",
                hint="Write it again (it may be truncated), or pass a CSV with `query,candidate[,score]` columns.",
            ) from e
    elif suffix in (".csv", ".tsv"):
        df = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise SkyRankError(f"--candidates must be a .parquet, .csv or .tsv file, got {path.name}")
    columns = list(df.columns)
    qcol = _pick(columns, QUERY_COLUMNS)
    if qcol is None:
        raise SkyRankError(f"{path.name} has no query column (one of {', '.join(QUERY_COLUMNS)}); it has {columns}")
    lists: dict[str, list[str]] = {}
    if "candidates" in columns:  # wide
        for q, cands in zip(df[qcol], df["candidates"], strict=True):
            if isinstance(cands, str):
                raise SkyRankError(f"{path.name}: 'candidates' must be a list column (Parquet); use the long layout "
                                   "in CSV (one row per query, candidate pair)")
            lists.setdefault(str(q), []).extend(str(c) for c in cands)
    else:
        ccol = _pick(columns, CANDIDATE_COLUMNS)
        if ccol is None:
            raise SkyRankError(
                f"{path.name} has no candidate column (one of {', '.join(CANDIDATE_COLUMNS)}, or a 'candidates' list "
                f"column); it has {columns}"
            )
        df = df.reset_index(drop=True)
        df["_row"] = range(len(df))
        if "score" in columns:
            df["_key"] = -_numeric(df, "score", path, suffix)
        elif "rank" in columns:
            df["_key"] = _numeric(df, "rank", path, suffix)
        else:
            df["_key"] = df["_row"]
        df = df.sort_values(["_key", "_row"], kind="stable")
        for q, c in zip(df[qcol], df[ccol], strict=True):
            lists.setdefault(str(q), []).append(str(c))
    for q, cands in lists.items():
        if len(set(cands)) != len(cands):
            raise SkyRankError(f"{path.name}: query {q!r} lists a candidate twice")
    if not lists:
        raise SkyRankError(f"{path.name} holds no (query, candidate) pair")
    return lists


_LAYOUT_HINT = "Fix that line: one `query,candidate[,score|rank]` row per pair, fields with the separator quoted."


def _read_delimited(path: Path, sep: str) -> Any:
    """A CSV/TSV as strings; a malformed line is a :class:`CandidateFileError` naming the file, line and column."""
    import pandas as pd

    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except UnicodeDecodeError as first:
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
            e = first
        except UnicodeDecodeError as exact:  # pandas decodes in chunks: its offsets are the chunk's
            e = exact
        data = raw[: e.start]
        line, column = data.count(b"\n") + 1, e.start - (data.rfind(b"\n") + 1) + 1
        raise CandidateFileError(
            f"--candidates {path}, line {line}, column {column} (byte {e.start}): not UTF-8 text ({e.reason})",
            hint="Save the file as UTF-8.",
        ) from e
    except pd.errors.EmptyDataError as e:
        raise CandidateFileError(f"--candidates {path} is empty (no header line)", hint=_LAYOUT_HINT) from e
    except (pd.errors.ParserError, ValueError) as e:
        raise _locate_csv_error(path, sep, e) from e


def _locate_csv_error(path: Path, sep: str, err: Exception) -> CandidateFileError:
    """The first line of ``path`` whose field count differs from the header's (or the parser's own message)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, [])
        try:
            end = reader.line_num
            for row in reader:
                start, end = end + 1, reader.line_num
                if any("\n" in field or "\r" in field for field in row):
                    return CandidateFileError(
                        f"--candidates {path}, line {start}: a quote (\") opened there is not closed on that line "
                        f"(the field runs on to line {end})",
                        hint=_LAYOUT_HINT,
                    )
                if row and len(row) != len(header):
                    column = min(len(row), len(header)) + 1
                    what = (f"{len(row)} fields where the header has {len(header)}" + (
                        f" (field {column} is {row[column - 1]!r})" if len(row) > len(header) else ""))
                    return CandidateFileError(
                        f"--candidates {path}, line {reader.line_num}, column {column}: {what}", hint=_LAYOUT_HINT
                    )
        except csv.Error as e:
            return CandidateFileError(f"--candidates {path}, line {reader.line_num}: {e}", hint=_LAYOUT_HINT)
    first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return CandidateFileError(f"--candidates {path} cannot be parsed: {first}", hint=_LAYOUT_HINT)


def _numeric(df: Any, column: str, path: Path, suffix: str) -> Any:
    """``df[column]`` as numbers; a value that is not one is named with its line (CSV) or row (Parquet)."""
    import pandas as pd

    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & ~df[column].isna()
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        where = f"line {i + 2}" if suffix != ".parquet" else f"row {i}"  # CSV: line 1 is the header
        col = list(df.columns).index(column) + 1
        raise CandidateFileError(
            f"--candidates {path}, {where}, column {col} ({column!r}): {df[column].iloc[i]!r} is not a number",
            hint=f"Fix that value: {column!r} must be a number on every line (or drop the column).",
        )
    return values


def _open(root: Path, rel: str) -> Any:
    from skyrank.errors import BadImageError
    from skyrank.images import open_rgb

    p = Path(rel)
    p = p if p.is_absolute() else root / p
    try:
        return open_rgb(p)  # the one decoder: 16-bit scaled to 8 bits, pixel budget, dangling links named
    except BadImageError as e:
        raise SkyRankError(f"cannot read image {rel!r} (looked at {p}): {e}") from e


def rerank_file(
    model: Any,
    candidates: str | Path,
    out: str | Path | None = None,
    *,
    images_root: str | Path | None = None,
    top_k: int | None = None,
    batch_size: int = 16,
    shared_prefix: bool = True,
    feature_cache_mb: float = 1024.0,
    progress: bool = False,
) -> RerankResult:
    """Re-rank every query's candidate list of ``candidates`` with ``model`` and write the scores and new order.

    ``model`` may also be a function returning it, called once the file has been read: a malformed file is then
    reported before a model that takes minutes to load is loaded.

    ``out``: ``.parquet`` or ``.csv`` (default ``<candidates stem>.reranked.parquet`` beside the input), written
    atomically. ``top_k``: re-rank only the first k candidates of each list (default all).
    """
    import pandas as pd
    import torch

    from skylink_model.rerank import FeatureCache, PixelCache, rerank_order, rerank_query

    if top_k is not None and top_k < 1:
        raise SkyRankError(f"--top-k must be at least 1, got {top_k}")
    candidates = Path(candidates)
    lists = read_candidate_lists(candidates)
    root = Path(images_root) if images_root is not None else candidates.parent
    out = Path(out) if out is not None else candidates.with_name(candidates.stem + ".reranked.parquet")
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise SkyRankError(f"--out must end in .parquet or .csv, got {out.name}")
    if callable(model) and not isinstance(model, torch.nn.Module):
        model = model()
    pixel_cache = PixelCache() if getattr(model, "supports_shared_vision", False) else None
    use_features = shared_prefix and feature_cache_mb > 0 and getattr(model, "supports_shared_prefix", False)
    feature_cache = FeatureCache(int(feature_cache_mb * 2**20)) if use_features else None

    records: list[dict[str, Any]] = []
    scored = 0
    seconds = 0.0
    items = list(lists.items())
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="re-ranking", unit="query")
    for query, cands in items:
        k = len(cands) if top_k is None else min(top_k, len(cands))
        top = cands[:k]
        query_image = _open(root, query)
        images = [_open(root, c) for c in top]
        tic = time.perf_counter()
        scores = rerank_query(
            model, query_image, images, batch_size=batch_size, candidate_keys=top, cache=pixel_cache,
            shared_prefix=shared_prefix, feature_cache=feature_cache,
        ).tolist()  # fmt: skip
        seconds += time.perf_counter() - tic
        scored += len(top)
        order = rerank_order(scores) + list(range(k, len(cands)))
        new_rank = {i: r for r, i in enumerate(order, start=1)}
        for i, cand in enumerate(cands):
            records.append(
                {
                    "query": query,
                    "candidate": cand,
                    "retriever_rank": i + 1,
                    "skylink_score": float(scores[i]) if i < k else math.nan,
                    "rank": new_rank[i],
                }
            )
    df = pd.DataFrame.from_records(records, columns=list(OUTPUT_COLUMNS))
    df = df.sort_values(["query", "rank"], kind="stable").reset_index(drop=True)
    if out.suffix.lower() == ".parquet":
        write_atomic(out, lambda tmp: df.to_parquet(tmp, index=False))
    else:
        write_atomic(out, lambda tmp: df.to_csv(tmp, index=False))
    return RerankResult(out, len(lists), len(records), scored, 1000.0 * seconds / max(1, len(lists)))
