"""Contact sheets: one PNG per query, as in the SkyLink paper's Figure 4.

Top line: the query and its ground truth. Then the retriever's top-k with its similarity scores, SkyLink's
re-ranked top-k with its scores S (Eq. 4: S = wᵀh_last) and, when the evaluation fused, the fused order with its
fused scores z(S) + W z(retriever). Positives are framed in green, VIGOR's semi-positives in amber, other
candidates in grey.
Queries are picked as stored (first N) or by rank change: the best positive's rank before minus after re-ranking
(``best``: largest gains first; ``worst``: largest losses first). A wide query (a street-view panorama: VIGOR 2:1,
CVUSA 5.5:1) gets a tile of its own aspect ratio, one thumbnail high (:func:`tile_size`), instead of a letterboxed
square.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from skylink_model.report._io import write_atomic
from skyrank.errors import BadImageError, EvalFileError
from skyrank.images import to_uint8_rgb

SELECTIONS: tuple[str, ...] = ("first", "best", "worst")
POSITIVE = (22, 163, 74)
NEGATIVE = (170, 170, 170)
GROUND_TRUTH = (37, 99, 235)
SEMI_POSITIVE = (217, 119, 6)  # VIGOR's semi-positives: neither positive nor negative


def best_rank(ranks: Sequence[int]) -> float:
    """The best (smallest) 1-based rank of any positive; ``inf`` with no positive."""
    return float(min(ranks)) if ranks else math.inf


def rank_change(record: Mapping[str, Any]) -> float:
    """Retriever rank − re-ranked rank of the best positive (> 0: SkyLink moved it up); 0 without scores."""
    if "reranked_positive_ranks" not in record:
        return 0.0
    before, after = best_rank(record["positive_ranks"]), best_rank(record["reranked_positive_ranks"])
    return 0.0 if math.isinf(before) else before - after


def select_queries(records: Sequence[Mapping[str, Any]], n: int, how: str = "first") -> list[Mapping[str, Any]]:
    """``n`` records: as stored (``first``), or by rank change (``best`` / ``worst``; ties keep stored order)."""
    if how not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {how!r}")
    if n < 1:
        raise ValueError(f"the number of queries must be ≥ 1, got {n}")
    order = list(range(len(records)))
    if how == "best":
        order.sort(key=lambda i: -rank_change(records[i]))
    elif how == "worst":
        order.sort(key=lambda i: rank_change(records[i]))
    return [records[i] for i in order[:n]]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


#: The widest tile, in thumbnail heights (CVUSA's 1232 x 224 panoramas are 5.5:1).
MAX_ASPECT = 6.0
#: Images wider than this (width / height) get a wide tile.
WIDE_ASPECT = 1.25


def tile_size(image: Image.Image, thumb: int) -> tuple[int, int]:
    """``(width, height)`` of an image's tile: ``thumb`` square, or ``thumb`` high and as wide as the image's aspect
    ratio (up to :data:`MAX_ASPECT`) for a wide image (a panorama)."""
    aspect = image.width / max(1, image.height)
    if aspect <= WIDE_ASPECT:
        return (thumb, thumb)
    return (int(round(thumb * min(aspect, MAX_ASPECT))), thumb)


def _thumb(image: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    width, height = (size, size) if isinstance(size, int) else size
    img = to_uint8_rgb(image).copy()  # the one normaliser: a 16-bit image is scaled, not clipped white
    img.thumbnail((width, height))
    canvas = Image.new("RGB", (width, height), (245, 245, 245))
    canvas.paste(img, ((width - img.width) // 2, (height - img.height) // 2))
    return canvas


def _short(text: str, font: Any, width: int, draw: ImageDraw.ImageDraw) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


def contact_sheet(
    record: Mapping[str, Any],
    images: Callable[[str], Image.Image],
    thumb: int = 112,
) -> Image.Image:
    """The contact sheet of one per-query record (:func:`skylink_model.evaluation.per_query_records`)."""
    positives = set(record.get("positive_ids") or [])
    semi = set(record.get("semi_positive_ids") or [])

    def frame_of(cid: str) -> tuple[int, int, int]:
        return POSITIVE if cid in positives else SEMI_POSITIVE if cid in semi else NEGATIVE
    top = list(record["retrieved_ids"])
    raw = record.get("retrieved_scores") or [None] * len(top)
    if len(raw) != len(top):
        raise EvalFileError(
            f"query {record.get('query_id')!r}: {len(raw)} retrieved_scores for {len(top)} retrieved_ids; "
            "re-run `skyrank eval --per-query` to rewrite the file"
        )
    has_rerank = "reranked_ids" in record
    has_fused = "fused_ids" in record
    pad, border, label_h, title_h = 10, 4, 30, 36
    cell = thumb + 2 * border
    k = max(len(top), 2)
    label_w = 150
    try:  # a panorama query gets a wide tile
        query_size = tile_size(images(str(record["query_id"])), thumb)
    except (OSError, BadImageError):
        query_size = (thumb, thumb)
    query_cell = query_size[0] + 2 * border
    width = label_w + pad + max(k * (cell + pad), query_cell + pad + cell + pad)
    n_rows = 2 + has_rerank + has_fused
    height = title_h + n_rows * (cell + label_h + pad) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font, small, bold = _font(14), _font(12), _font(16)

    before = best_rank(record.get("positive_ranks") or [])
    title = f"query {record['query_id']}   best positive: retriever rank {_rank(before)}"
    if has_rerank:
        title += f" -> SkyLink rank {_rank(best_rank(record['reranked_positive_ranks']))}"
    if has_fused:
        title += f", fused rank {_rank(best_rank(record['fused_positive_ranks']))}"
    draw.text((pad, pad), _short(title, bold, width - 2 * pad, draw), fill="black", font=bold)

    def tile(
        x: int, y: int, image_id: str, frame: tuple[int, int, int], caption: str, note: str = "", wide: int = 0
    ) -> None:
        tw = wide or thumb  # the thumbnail's width: ``wide`` for a panorama query
        draw.rectangle([x, y, x + tw + 2 * border - 1, y + cell - 1], fill=frame)
        try:
            sheet.paste(_thumb(images(image_id), (tw, thumb)), (x + border, y + border))
        except (OSError, BadImageError) as e:  # a missing image is drawn as such, not a failed report
            draw.rectangle([x + border, y + border, x + border + tw, y + border + thumb], fill=(255, 235, 235))
            draw.text((x + border + 4, y + border + 4), f"missing:\n{type(e).__name__}", fill="red", font=small)
        draw.text((x, y + cell + 2), caption, fill="black", font=small)  # short by construction: never cut
        name = "/".join(image_id.rsplit("/", 2)[-2:])
        room = tw + 2 * border - int(draw.textlength(note, font=small))
        draw.text((x, y + cell + 15), note + _short(name, small, room, draw), fill=(90, 90, 90), font=small)

    y = title_h
    draw.text((pad, y + cell // 2 - 8), "query / ground truth", fill="black", font=font)
    tile(label_w + pad, y, str(record["query_id"]), NEGATIVE, "query", wide=query_size[0])
    if record.get("gt_id"):
        tile(label_w + pad + query_cell + pad, y, str(record["gt_id"]), GROUND_TRUTH, "ground truth")
    y += cell + label_h + pad

    draw.text((pad, y + cell // 2 - 8), f"retriever top-{len(top)}", fill="black", font=font)
    for j, (cid, score) in enumerate(zip(top, raw, strict=True)):
        caption = f"#{j + 1}" + (f"  cos {float(score):.3f}" if score is not None else "")
        tile(label_w + pad + j * (cell + pad), y, cid, frame_of(cid), caption)
    y += cell + label_h + pad

    for ids_key, scores_key, label, symbol in (("reranked_ids", "scores", "SkyLink re-ranked", "S"),
                                               ("fused_ids", "fused_scores", "SkyLink fused", "z")):  # fmt: skip
        if ids_key not in record:
            continue
        score_of = dict(zip(top, record[scores_key], strict=True))
        draw.text((pad, y + cell // 2 - 8), label, fill="black", font=font)
        for j, cid in enumerate(record[ids_key]):
            caption = f"#{j + 1}  {symbol} {score_of[cid]:.3f}"
            note = f"was #{top.index(cid) + 1} "
            tile(label_w + pad + j * (cell + pad), y, cid, frame_of(cid), caption, note)
        y += cell + label_h + pad
    return sheet


def _rank(r: float) -> str:
    return "none" if math.isinf(r) else str(int(r))


def write_contact_sheets(
    records: Sequence[Mapping[str, Any]],
    images: Callable[[str], Image.Image],
    out_dir: str | Path,
    *,
    queries: int = 8,
    select: str = "first",
    thumb: int = 112,
) -> list[tuple[Mapping[str, Any], Path]]:
    """Write one PNG per selected query under ``out_dir`` (``NN-<query id>.png``); returns (record, path) pairs."""
    out_dir = Path(out_dir)
    written = []
    for i, record in enumerate(select_queries(records, queries, select), start=1):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(record["query_id"])).strip("_")[-80:]
        path = out_dir / f"{i:02d}-{stem}.png"
        sheet = contact_sheet(record, images, thumb=thumb)
        write_atomic(path, lambda tmp, sheet=sheet: sheet.save(tmp, format="PNG"))
        written.append((record, path))
    return written
