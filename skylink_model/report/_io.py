"""Reading evaluation files and writing outputs atomically (every file goes to a ``.tmp`` sibling, then is renamed)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrank.atomic import write_atomic, write_text_atomic  # noqa: F401  (re-exported for the report modules)
from skyrank.errors import EvalFileError


@dataclass
class EvalRun:
    """One evaluation JSON as ``skyrank eval --json`` writes it (:class:`skylink_model.evaluation.EvalReport`)."""

    path: Path
    config: str
    split: str
    top_k: int | None
    rows: dict[str, dict[str, Any]]
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def per_query_path(self) -> Path | None:
        """The per-query JSON Lines file named in ``extra["per_query"]`` (relative to the JSON's folder), if any."""
        name = (self.data.get("extra") or {}).get("per_query")
        if not name:
            return None
        p = Path(name)
        return p if p.is_absolute() else self.path.parent / p


def load_eval_json(path: str | Path) -> EvalRun:
    """Read one evaluation JSON; :class:`EvalFileError` when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalFileError(f"{path}: no such evaluation JSON") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalFileError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), dict) or not data.get("config"):
        raise EvalFileError(f"{path}: not an evaluation JSON (expected the keys 'config' and 'rows' of skyrank eval)")
    rows = {str(k): dict(v) for k, v in data["rows"].items() if isinstance(v, dict)}
    top_k = data.get("top_k")
    return EvalRun(path, str(data["config"]), str(data.get("split") or ""), top_k, rows, data)


def load_per_query(path: str | Path) -> list[dict[str, Any]]:
    """Read the per-query JSON Lines of :func:`skylink_model.evaluation.write_per_query`."""
    path = Path(path)
    if not path.is_file():
        raise EvalFileError(f"{path}: no per-query file (run `skyrank eval ... --json eval.json --per-query`)")
    records = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalFileError(f"{path}:{n}: not a JSON line ({e})") from None
            if not isinstance(rec, dict) or "query_id" not in rec or "retrieved_ids" not in rec:
                raise EvalFileError(f"{path}:{n}: not a per-query record (needs query_id and retrieved_ids)")
            records.append(rec)
    if not records:
        raise EvalFileError(f"{path}: the per-query file is empty")
    return records
