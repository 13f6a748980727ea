"""What the Hugging Face Hub accepts, as data: metadata allow-lists, name rules and size limits.

Sources (notes/hub.md): hub-docs ``repositories-licenses.md`` (licence ids), huggingface.js ``pipelines.ts``
(task categories), ``datasetcard.md`` (size categories), datasets ``naming.py`` (split-name regex) and hub-docs
``storage-limits.md`` (file and folder counts, file sizes). :func:`check_card_metadata` and :func:`check_files`
return problems as plain strings so a caller can list every problem at once.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

LICENSES: frozenset[str] = frozenset(
    """
    apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c
    ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib
    pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2
    llama3.3 llama4 gemma unknown other
    """.split()
)

TASK_CATEGORIES: frozenset[str] = frozenset(
    """
    text-classification token-classification table-question-answering question-answering zero-shot-classification
    translation summarization feature-extraction text-generation fill-mask sentence-similarity text-to-speech
    text-to-audio automatic-speech-recognition audio-to-audio audio-classification audio-text-to-text
    voice-activity-detection depth-estimation image-classification object-detection image-segmentation
    text-to-image image-to-text image-to-image image-to-video unconditional-image-generation video-classification
    reinforcement-learning robotics tabular-classification tabular-regression tabular-to-text table-to-text
    multiple-choice text-ranking text-retrieval time-series-forecasting text-to-video image-text-to-text
    image-text-to-image image-text-to-video visual-question-answering document-question-answering
    zero-shot-image-classification graph-ml mask-generation zero-shot-object-detection text-to-3d image-to-3d
    image-feature-extraction video-text-to-text keypoint-detection visual-document-retrieval any-to-any
    video-to-video other
    """.split()
)

SIZE_CATEGORIES: tuple[str, ...] = (
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
    "n>1T",
)

#: ``datasets.naming._split_re``: split names are word characters, optionally dot-separated.
SPLIT_NAME_RE = re.compile(r"^\w+(\.\w+)*$")
#: What the command line takes for a Hub repo id (``owner/name``) when no local folder of that name exists.
REPO_ID_SHAPE_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_repo_id(value: str) -> bool:
    """``value`` has a Hub repo id's shape (``owner/name``) and is no local path (``./x``, ``/x``, ``~/x``)."""
    return not value.startswith((".", "/", "~")) and REPO_ID_SHAPE_RE.fullmatch(value) is not None
#: Config names: the Hub viewer and ``load_dataset`` accept letters, digits, ``-``, ``_`` and ``.``.
CONFIG_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

MAX_FILES_PER_REPO = 100_000
MAX_ENTRIES_PER_FOLDER = 10_000
RECOMMENDED_MAX_FILE_BYTES = 50 * 1000**3
HARD_MAX_FILE_BYTES = 200 * 1000**3


def size_category(num_rows: int) -> str:
    """The ``size_categories`` value for a row count."""
    for i, name in enumerate(SIZE_CATEGORIES[:-1]):
        if num_rows < 10 ** (3 + i):
            return name
    return SIZE_CATEGORIES[-1]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_card_metadata(meta: dict[str, Any]) -> list[str]:
    """Problems in a dataset card's YAML metadata (licence, task/size categories, configs, splits, default)."""
    problems: list[str] = []
    for lic in _as_list(meta.get("license")):
        if lic not in LICENSES:
            problems.append(f"README.md: license {lic!r} is not a Hub licence id (e.g. cc-by-nc-4.0, mit, other)")
        if lic == "other" and not meta.get("license_name"):
            problems.append("README.md: license 'other' needs license_name (and license_link)")
    for task in _as_list(meta.get("task_categories")):
        if task not in TASK_CATEGORIES:
            problems.append(f"README.md: task_categories value {task!r} is not a Hub task category")
    for size in _as_list(meta.get("size_categories")):
        if size not in SIZE_CATEGORIES:
            problems.append(f"README.md: size_categories value {size!r} is not one of {', '.join(SIZE_CATEGORIES)}")

    configs = meta.get("configs")
    if not isinstance(configs, list) or not configs:
        problems.append("README.md: no 'configs:' list in the YAML metadata")
        return problems
    names = [c.get("config_name") if isinstance(c, dict) else None for c in configs]
    for name, count in Counter(names).items():
        if name is None:
            problems.append("README.md: a configs entry has no config_name")
        elif count > 1:
            problems.append(f"README.md: config {name!r} is declared {count} times")
        elif not CONFIG_NAME_RE.match(str(name)):
            problems.append(f"README.md: config name {name!r} may only hold letters, digits, '-', '_' and '.'")
    defaults = [c.get("config_name") for c in configs if isinstance(c, dict) and c.get("default")]
    if len(configs) > 1 and "default" not in names and len(defaults) != 1:
        problems.append(
            f"README.md: exactly one config must be marked 'default: true', found {len(defaults)}"
            + (f" ({', '.join(map(str, defaults))})" if defaults else "")
        )
    for cfg in configs:
        if not isinstance(cfg, dict):
            continue
        for item in _as_list(cfg.get("data_files")):
            if isinstance(item, dict):
                split = item.get("split")
                if split is None or not SPLIT_NAME_RE.match(str(split)):
                    problems.append(
                        f"config {cfg.get('config_name')!r}: split name {split!r} is not legal "
                        r"(it must match ^\w+(\.\w+)*$: letters, digits, '_', no '-')"
                    )
                paths = _as_list(item.get("path"))
            else:
                paths = [item]
            for path in paths:
                if not (str(path).endswith(".parquet") or str(path).endswith("*")):
                    problems.append(f"config {cfg.get('config_name')!r}: data file {path!r} is not Parquet")
    for info in _as_list(meta.get("dataset_info")):
        if isinstance(info, dict):
            for split in _as_list(info.get("splits")):
                name = split.get("name") if isinstance(split, dict) else None
                if name is not None and not SPLIT_NAME_RE.match(str(name)):
                    problems.append(f"dataset_info {info.get('config_name')!r}: split name {name!r} is not legal")
    return problems


def check_files(folder: Path, files: list[Path]) -> tuple[list[str], list[str]]:
    """(problems, warnings) for the files to upload: counts per repo and per folder, sizes, formats."""
    problems: list[str] = []
    warnings: list[str] = []
    if len(files) >= MAX_FILES_PER_REPO:
        problems.append(f"{len(files)} files: a Hub repo must hold fewer than {MAX_FILES_PER_REPO:,}")
    per_folder = Counter(p.relative_to(folder).parent.as_posix() for p in files)
    for parent, count in sorted(per_folder.items()):
        if count >= MAX_ENTRIES_PER_FOLDER:
            problems.append(f"folder {parent!r} holds {count} files: the Hub limit is {MAX_ENTRIES_PER_FOLDER:,}")
    for path in files:
        rel = path.relative_to(folder).as_posix()
        size = path.stat().st_size
        if size >= HARD_MAX_FILE_BYTES:
            problems.append(f"{rel}: {size / 1e9:.1f} GB is over the Hub's hard limit of 200 GB per file")
        elif size >= RECOMMENDED_MAX_FILE_BYTES:
            warnings.append(f"{rel}: {size / 1e9:.1f} GB is over the recommended 50 GB per file")
        if rel not in ("README.md",) and not rel.endswith((".parquet", ".json")):
            problems.append(f"{rel}: not a Parquet file (every data file must be Parquet)")
    return problems, warnings
