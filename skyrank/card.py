"""The SkyRank dataset card (README.md): Hub YAML metadata generated programmatically + a Jinja body.

The YAML front matter is built with the same objects ``push_to_hub`` uses (notes/hub.md §1): ``DatasetCardData`` for
licence, task/size categories, tags and pretty name; ``MetadataConfigs(...).to_dataset_card_data`` for ``configs:``
(``data_files: [{split, path: "<config>/<split>-*"}]``, exactly one ``default: true``); and
``DatasetInfosDict(...).to_dataset_card_data`` for ``dataset_info:`` with the features of
:mod:`skyrank.format.schema` and exact ``num_examples`` (``load_dataset`` verifies them). The body is
``cards/dataset_card.md.jinja``.

Nothing here talks to the network (``RepoCard.validate()`` would; it is never called).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Features
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

import cards
from skyrank import hub_limits
from skyrank.format import schema
from skyrank.writer import TableInfo

#: The Jinja body of the card (``cards/`` ships as package data).
TEMPLATE_PATH = Path(cards.__file__).resolve().parent / "dataset_card.md.jinja"

#: The SkyLink paper (arXiv 2603.08063; v1 title "SkyLink: A Large Vision-Language Model Driven Re-ranking Framework
#: for Cross-View UAV geolocalization"). Authors as listed on the arXiv v2 HTML page.
SKYLINK_CITATION = """\
@misc{liu2026skylink,
  title         = {Enhancing Cross-View UAV Geolocalization via LVLM-Driven Relational Modeling},
  author        = {Liu, Bowen and Jia, Pengyue and Wang, Wanyu and Xu, Derong and Cheng, Jiawei and Dong, Jiancheng
                   and Han, Xiao and Zhao, Zimo and Zhang, Chao and Yu, Bowen and Hong, Fangyu and Zhao, Xiangyu},
  year          = {2026},
  eprint        = {2603.08063},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CV},
  url           = {https://arxiv.org/abs/2603.08063}
}"""

#: The placeholder the loading snippets use when no repo id is given.
DEFAULT_REPO_PLACEHOLDER = "<user>/<repo> or /path/to/this/folder"


def _type_name(feature: Any) -> str:
    """A short type name for the schema table (``string``, ``int32``, ``list<float32>``, ``image``)."""
    dtype = getattr(feature, "dtype", None)
    if type(feature).__name__ == "Image":
        return "image"
    if type(feature).__name__ in ("List", "Sequence", "LargeList"):
        length = getattr(feature, "length", -1)
        return f"list<{_type_name(feature.feature)}>" + (f"[{length}]" if length and length > 0 else "")
    return str(dtype)


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    text = "—" if value is None or value == "" else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _columns(features: Features) -> list[dict[str, str]]:
    return [
        {"name": name, "type": _type_name(feat), "meaning": _cell(schema.COLUMN_DESCRIPTIONS.get(name, ""))}
        for name, feat in features.items()
    ]


def _pct(value: Any) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return "—"


def card_metadata(
    tables: Sequence[TableInfo],
    *,
    pretty_name: str,
    license: str,
    license_name: str | None = None,
    license_link: str | None = None,
    default_config: str,
) -> DatasetCardData:
    """The YAML metadata of a SkyRank card (see the module docstring). Raises ``ValueError`` on bad input."""
    if not tables:
        raise ValueError("a dataset card needs at least one table")
    if license not in hub_limits.LICENSES:
        raise ValueError(f"license {license!r} is not a Hub licence id (use 'other' with license_name/license_link)")
    extra: dict[str, Any] = {}
    if license == "other":
        if not license_name or not license_link:
            raise ValueError("license 'other' needs license_name and license_link")
        extra = {"license_name": license_name, "license_link": license_link}
    by_config: dict[str, list[TableInfo]] = {}
    for t in tables:
        by_config.setdefault(t.config, []).append(t)
    if default_config not in by_config:
        raise ValueError(f"default config {default_config!r} is not one of the tables' configs {sorted(by_config)}")
    largest = max(sum(t.num_rows for t in ts) for ts in by_config.values())

    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        **extra,
        task_categories=list(schema.CARD_TASK_CATEGORIES),
        size_categories=[hub_limits.size_category(largest)],
        tags=list(schema.CARD_TAGS),
    )
    # Default config first, then the others sorted by name (a deterministic order for byte-identical cards).
    order = [default_config] + sorted(c for c in by_config if c != default_config)
    configs = {}
    infos = {}
    for cfg in order:
        ts = sorted(by_config[cfg], key=lambda t: _split_order(t.split))
        entry: dict[str, Any] = {"data_files": [{"split": t.split, "path": f"{cfg}/{t.split}-*"} for t in ts]}
        if cfg == default_config:
            entry["default"] = True
        configs[cfg] = entry
        features = ts[0].features
        if any(t.features != features for t in ts):
            raise ValueError(f"the splits of config {cfg!r} have different features")
        splits = SplitDict()
        for t in ts:
            splits.add(SplitInfo(name=t.split, num_bytes=int(t.num_bytes), num_examples=int(t.num_rows)))
        infos[cfg] = DatasetInfo(
            features=features,
            splits=splits,
            download_size=int(sum(t.file_bytes for t in ts)),
            dataset_size=int(sum(t.num_bytes for t in ts)),
        )
    MetadataConfigs(configs).to_dataset_card_data(card_data)
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    return card_data


def _split_order(split: str) -> tuple[int, str]:
    return (schema.SPLITS.index(split) if split in schema.SPLITS else len(schema.SPLITS), split)


def _index_summary(info: Any) -> str | None:
    """One line about the search index: exact, or the approximate index with its measured recall@m."""
    if not isinstance(info, Mapping):
        return None
    kind = info.get("kind", "exact")
    text = f"{kind} (faiss{', GPU' if info.get('on_gpu') else ''})"
    params = {k: info[k] for k in ("nlist", "nprobe", "M", "ef_construction", "ef_search") if info.get(k) is not None}
    if params:
        text += " " + ", ".join(f"{k}={v}" for k, v in params.items())
    if info.get("fallback"):
        text += f"; {info['fallback']}"
    if kind != "exact" and info.get("recall_at_m") is not None:
        text += (
            f"; recall@{info.get('recall_k', 'm')} against exact search {info['recall_at_m']:.4f} on "
            f"{info.get('recall_queries', '?')} sampled queries; ranks are exact over the full gallery"
        )
    return text


def input_size_text(image_size: int, sizes: Mapping[str, tuple[int, int]]) -> int | str:
    """The card's "retriever image size": ``image_size`` when every view is the square ``image_size`` (as every
    University-1652, SUES-200 and synthetic build: their cards stay as they were), else each view's ``H×W`` by name
    (``ground 140×768, satellite 384×384``: Sample4Geo's panoramas keep their shape)."""
    if all(tuple(hw) == (image_size, image_size) for hw in sizes.values()):
        return image_size
    return ", ".join(f"{view} {h}×{w}" for view, (h, w) in sorted(sizes.items()))


def _build_rows(build_params: Mapping[str, Any], retriever_meta: Mapping[str, Any]) -> list[dict[str, str]]:
    rows: list[tuple[str, Any]] = [
        ("retriever", retriever_meta.get("name")),
        ("retriever architecture", retriever_meta.get("arch")),
        ("retriever image size", retriever_meta.get("image_size")),
        ("retriever paper", retriever_meta.get("paper")),
        # the file name only: a local absolute path says nothing to readers (the sha256 identifies the weights)
        ("checkpoint", Path(str(retriever_meta["checkpoint"])).name if retriever_meta.get("checkpoint") else None),
        ("checkpoint sha256", retriever_meta.get("checkpoint_sha256")),
        ("m (top-m mined per query)", build_params.get("m")),
        ("gallery protocol", build_params.get("protocol")),
        ("directions", build_params.get("directions", build_params.get("direction"))),
        ("splits", build_params.get("splits")),
        ("altitude", build_params.get("altitude")),
        ("images embedded", build_params.get("with_images")),
        ("retriever trained by the build", build_params.get("retriever_recipe")),
        ("search index", _index_summary(build_params.get("search_index"))),
    ]
    out = []
    for name, value in rows:
        if value is None or value == "":
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        if name in ("checkpoint", "checkpoint sha256"):
            value = f"`{value}`"
        out.append({"name": _cell(name), "value": _cell(value)})
    software = build_params.get("software") or build_params.get("software_versions") or {}
    if isinstance(software, Mapping):
        for pkg, ver in sorted(software.items()):
            out.append({"name": _cell(f"{pkg} version"), "value": _cell(ver)})
    return out


def render_dataset_card(
    tables: list[TableInfo],
    *,
    pretty_name: str,
    benchmark_meta: dict[str, Any],
    retriever_meta: dict[str, Any],
    build_params: dict[str, Any],
    stats: dict[tuple[str, str], dict[str, Any]],
    default_config: str,
    repo_id: str | None = None,
) -> str:
    """Render the README.md of a SkyRank dataset folder.

    Args:
        tables: what :meth:`skyrank.writer.DatasetWriter.add_table` returned, one per (config, split).
        pretty_name: the card's title and ``pretty_name``.
        benchmark_meta: ``name``, ``license`` (a Hub licence id; ``other`` needs ``license_name`` and
            ``license_link``), ``citation`` (BibTeX), ``redistributable`` (may image bytes be published).
        retriever_meta: ``name``, ``citation``, ``paper``, ``checkpoint``, ``checkpoint_sha256``, ``arch``,
            ``image_size``.
        build_params: ``m``, ``protocol``, ``directions``/``direction``, ``splits``, ``with_images``, ``software``
            (name → version), ``skipped_bad_images`` (list of paths).
        stats: per (config, split): ``rows``, ``gt_in_top_m``, ``R@1``, ``R@5``, ``R@10``, ``AP`` (percent).
        default_config: the config marked ``default: true`` (normally the retriever config).
        repo_id: Hub repo id for the loading snippets (a placeholder when not given).

    Returns:
        the card text: YAML front matter (``configs``, ``dataset_info`` with exact ``num_examples``, licence, task
        and size categories, tags) and the Markdown body. Deterministic for the same inputs.
    """
    card_data = card_metadata(
        tables,
        pretty_name=pretty_name,
        license=benchmark_meta.get("license") or "other",
        license_name=benchmark_meta.get("license_name"),
        license_link=benchmark_meta.get("license_link"),
        default_config=default_config,
    )
    configs = sorted({t.config for t in tables})
    gallery = next((c for c in configs if schema.config_kind(c) == "gallery"), None)
    queries = next((c for c in configs if schema.config_kind(c) == "queries"), None)
    default_splits = sorted((t.split for t in tables if t.config == default_config), key=_split_order)
    example_split = "test" if "test" in default_splits else default_splits[0]
    with_images = bool(build_params.get("with_images")) or any("image" in t.features for t in tables)

    table_rows = [
        {"config": t.config, "kind": schema.config_kind(t.config), "split": t.split, "rows": f"{t.num_rows:,}"}
        for t in sorted(tables, key=lambda t: (t.config != default_config, t.config, _split_order(t.split)))
    ]
    stats_rows = []
    for (cfg, split), s in sorted(stats.items(), key=lambda kv: (kv[0][0], _split_order(kv[0][1]))):
        stats_rows.append(
            {
                "config": cfg,
                "split": split,
                "rows": f"{int(s.get('rows', 0)):,}",
                "gt_in_top_m": _pct(s.get("gt_in_top_m")),
                "r1": _pct(s.get("R@1")),
                "r5": _pct(s.get("R@5")),
                "r10": _pct(s.get("R@10")),
                "ap": _pct(s.get("AP")),
            }
        )
    embeddings = build_params.get("embeddings") if isinstance(build_params.get("embeddings"), Mapping) else None
    license_id = benchmark_meta.get("license") or "other"
    if license_id == "other":
        license_text = f"[{benchmark_meta.get('license_name')}]({benchmark_meta.get('license_link')})"
    else:
        license_text = f"licence `{license_id}`"

    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        pretty_name=pretty_name,
        benchmark_name=benchmark_meta.get("name") or "the benchmark",
        retriever_name=retriever_meta.get("name") or "the retriever",
        m=build_params.get("m", "?"),
        with_images=with_images,
        table_rows=table_rows,
        default_config=default_config,
        gallery_config=gallery,
        queries_config=queries,
        example_split=example_split,
        repo_id=repo_id or DEFAULT_REPO_PLACEHOLDER,
        retriever_columns=_columns(schema.RETRIEVER_FEATURES),
        image_columns=_columns(schema.IMAGE_TABLE_FEATURES_WITH_IMAGES),
        embeddings=embeddings,
        embedding_columns=_columns(schema.embeddings_features(embeddings["dim"], embeddings["dtype"]))
        if embeddings
        else [],
        remined=list(build_params.get("remined") or []),
        build_rows=_build_rows(build_params, retriever_meta),
        stats_rows=stats_rows,
        redistributable=bool(benchmark_meta.get("redistributable")),
        license_text=license_text,
        bad_images=list(build_params.get("skipped_bad_images") or []),
        skipped_empty_folders=list(build_params.get("skipped_empty_folders") or []),
        random_weights=bool(build_params.get("random_weights")),
        skylink_citation=SKYLINK_CITATION,
        benchmark_citation=(benchmark_meta.get("citation") or "").strip(),
        benchmark_notes=_benchmark_notes(benchmark_meta.get("name")),
        evaluation_protocol=build_params.get("evaluation_protocol"),
        retriever_citation=(retriever_meta.get("citation") or "").strip(),
    )
    text = str(card)
    return text if text.endswith("\n") else text + "\n"


def _benchmark_notes(name: str | None) -> str:
    from skyrank.benchmarks import benchmark_notes

    return benchmark_notes(name)


def render_card_from_inputs(
    tables: list[TableInfo], card_inputs: dict[str, Any], build_params: dict[str, Any], default_config: str
) -> str:
    """:func:`render_dataset_card` from the ``card_inputs`` a build stores in its manifest (so ``skyrank remine``
    re-renders the card of a changed folder exactly as the build did)."""
    return render_dataset_card(
        tables,
        pretty_name=card_inputs["pretty_name"],
        benchmark_meta=card_inputs["benchmark_meta"],
        retriever_meta=card_inputs["retriever_meta"],
        build_params=build_params,
        stats={(s["config"], s["split"]): s for s in card_inputs["stats"]},
        default_config=default_config,
    )

