"""``skyrank publish-model``: upload a SkyLink run folder to a Hub model repo with a rendered model card.

The run folder (``skyrank train``) must hold ``adapter_config.json``, ``adapter_model.safetensors``,
``value_head.safetensors`` and ``skylink_config.json``; an evaluation report (``skyrank eval --json``, e.g.
``eval.json``) is optional and becomes the card's evaluation table (rows retriever / +SkyLink / +SkyLink fused /
improvements with R@1, R@5, R@10, AP (Market-1501), AP_precision and AP_conservative, defined in
:mod:`skyrank.metrics`; a schema-1 report's ``AP_conservative`` was the top-k list AP and is left out). The card
(``cards/model_card.md.jinja``) states the base model, the training data, the parameters and the citations
(SkyLink arXiv 2603.08063, the benchmark, the retriever). Everything goes up in ONE ``upload_folder`` commit from a
staging folder; the run folder is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skyrank.errors import PublishError
from skyrank.format.schema import ConfigName
from skyrank.hub import FilePlan, PublishReport, compare_with_remote, hub_errors, progress_bars, read_remote_model
from skyrank.loading import config_benchmark, join_front_matter

REQUIRED_FILES: tuple[str, ...] = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "value_head.safetensors",
    "skylink_config.json",
)
EVAL_FILE_NAMES: tuple[str, ...] = ("eval.json", "eval_results.json", "evaluation.json", "skyrank_eval.json")
METRICS: tuple[str, ...] = ("R@1", "R@5", "R@10", "AP", "AP_precision", "AP_conservative")
ROW_LABELS = {
    "retriever": "Retriever",
    "skylink": "+SkyLink",
    "skylink_fused": "+SkyLink fused",
    "improvement": "Improvement",
    "improvement_fused": "Improvement (fused)",
}
TEMPLATE = Path(__file__).resolve().parent.parent / "cards" / "model_card.md.jinja"

#: benchmark name -> its BibTeX (or None); :func:`skyrank.benchmarks.benchmark_citation` in the CLI. The model half
#: never imports the build pipeline, so the benchmark registry is passed in rather than imported.
CitationLookup = Callable[[str], "str | None"]


def _find_eval(run_dir: Path) -> Path | None:
    for name in EVAL_FILE_NAMES:
        if (run_dir / name).is_file():
            return run_dir / name
    found = sorted(p for p in run_dir.glob("*eval*.json") if p.is_file())
    return found[0] if found else None


def _evaluation(report: dict[str, Any]) -> dict[str, Any] | None:
    rows = report.get("rows") if isinstance(report.get("rows"), dict) else report
    table = []
    old_schema = int(report.get("schema_version", 1)) < 2
    for key in ROW_LABELS:
        row = rows.get(key) if isinstance(rows, dict) else None
        if not isinstance(row, dict):
            continue
        if old_schema:  # schema 1's AP_conservative was the top-k list AP, not the paper's A.1 AP
            row = {("AP_topk_market1501" if m == "AP_conservative" else m): v for m, v in row.items()}
        signed = key.startswith("improvement")
        cells = [("–" if m not in row else f"{float(row[m]):+.2f}" if signed else f"{float(row[m]):.2f}")
                 for m in METRICS]  # fmt: skip
        table.append((ROW_LABELS[key], cells))
    if not table:
        return None
    caption = ", ".join(
        f"{k}: {report[k]}" for k in ("config", "split", "top_k", "num_queries", "protocol") if k in report
    )
    return {"metrics": METRICS, "rows": table, "caption": f"All metrics in percent ({caption})." if caption else ""}


def _parse_config(name: str) -> ConfigName | None:
    try:
        return ConfigName.parse(name)
    except ValueError:
        return None


def _citations(benchmark: str | None, extra: list[str], benchmark_citation: CitationLookup | None) -> list[str]:
    out = []
    if benchmark and benchmark_citation is not None:
        citation = benchmark_citation(benchmark)
        if citation:
            out.append(citation.strip())
    out += [c.strip() for c in extra if c and c.strip()]
    return list(dict.fromkeys(out))


def render_model_card(
    run_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    training_data: str | None = None,
    citations: list[str] | None = None,
    benchmark_citation: CitationLookup | None = None,
) -> str:
    """The model card (README.md) of a SkyLink run folder; ``benchmark_citation`` adds the benchmark's BibTeX."""
    import jinja2

    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "skylink_config.json").read_text(encoding="utf-8"))
    adapter = json.loads((run_dir / "adapter_config.json").read_text(encoding="utf-8"))
    base_model = cfg.get("base_model") or adapter.get("base_model_name_or_path") or "unknown"
    eval_path = _find_eval(run_dir)
    report = json.loads(eval_path.read_text(encoding="utf-8")) if eval_path else {}
    data_config = report.get("config") or cfg.get("train_config") or cfg.get("dataset_config")
    training_data = training_data or cfg.get("training_data") or cfg.get("dataset")
    if not training_data and data_config:
        training_data = f"SkyRank config `{data_config}`" + (f" ({report['data']})" if report.get("data") else "")
    parsed = _parse_config(str(data_config)) if data_config else None
    benchmark = parsed.benchmark if parsed else config_benchmark(str(data_config)) if data_config else None
    retriever = parsed.retriever if parsed else None
    extra = list(citations or [])
    if isinstance(report.get("extra"), dict) and report["extra"].get("retriever_citation"):
        extra.append(str(report["extra"]["retriever_citation"]))
    meta: dict[str, Any] = {
        "library_name": "peft",
        "base_model": base_model,
        "pipeline_tag": "image-text-to-text",
        "tags": ["skyrank", "skylink", "reranking", "geo-localization", "cross-view", "uav", "lora"],
    }
    if cfg.get("license"):
        meta["license"] = cfg["license"]
    if "/" in str(cfg.get("dataset_repo", "")):
        meta["datasets"] = [cfg["dataset_repo"]]
    parameters = [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in sorted(cfg.items())
                  if isinstance(v, (str, int, float, bool, list)) or v is None]  # fmt: skip
    card_yaml = join_front_matter(meta, "").split("---\n")[1]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(
        card_yaml=card_yaml,
        title=f"SkyLink re-ranker: {repo_id.split('/')[-1]}",
        base_model=base_model,
        repo_id=repo_id,
        eval_file=eval_path.name if eval_path else None,
        training_data=training_data + (f" (first-stage retriever: `{retriever}`)" if retriever else "")
        if training_data
        else None,
        parameters=parameters,
        evaluation=_evaluation(report) if report else None,
        citations=_citations(benchmark, extra, benchmark_citation),
    )


def publish_model(
    run_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    endpoint: str | None = None,
    dry_run: bool = False,
    training_data: str | None = None,
    citations: list[str] | None = None,
    benchmark_citation: CitationLookup | None = None,
    progress: bool = True,
) -> PublishReport:
    """Upload a SkyLink run folder to the Hub model repo ``repo_id`` with a rendered model card (one commit).

    Raises:
        PublishError: a required file is missing (all are named), or a Hub error with a fix-it message.
    """
    from huggingface_hub import HfApi, constants

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise PublishError(f"{run_dir} is not a folder: pass the run folder of `skyrank train`")
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise PublishError(f"{run_dir} is not a complete SkyLink run: missing {', '.join(missing)}")
    token = token or os.environ.get("HF_TOKEN") or None
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    eval_path = _find_eval(run_dir)
    files = list(REQUIRED_FILES) + ([eval_path.name] if eval_path else [])
    card = render_model_card(run_dir, repo_id, training_data=training_data, citations=citations,
                             benchmark_citation=benchmark_citation)

    report = PublishReport(repo_id=repo_id, endpoint=endpoint, revision=None, dry_run=dry_run)
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="skyrank-publish-model-") as tmp, progress_bars(progress):
        staging = Path(tmp) / "stage"
        staging.mkdir()
        for name in files:
            try:
                os.link(run_dir / name, staging / name)
            except OSError:
                shutil.copy2(run_dir / name, staging / name)
        (staging / "README.md").write_text(card, encoding="utf-8")
        with hub_errors(endpoint=endpoint, repo_id=repo_id, revision=None, token=token):
            exists, remote_files = read_remote_model(api, repo_id)
        report.remote_exists = exists
        for name in ["README.md", *files]:
            path = staging / name
            report.files.append(FilePlan(name, path.stat().st_size, compare_with_remote(path, remote_files.get(name))))
        if progress:
            print(report.format_plan().replace("/datasets/", "/"))
        if dry_run:
            return report
        with hub_errors(endpoint=endpoint, repo_id=repo_id, revision=None, token=token):
            if not exists:
                api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
            if report.changes:
                info = api.upload_folder(
                    repo_id=repo_id,
                    repo_type="model",
                    folder_path=str(staging),
                    allow_patterns=["README.md", *files],
                    commit_message="SkyLink: publish re-ranker",
                )
                report.uploaded = True
                report.commit_oid = getattr(info, "oid", None)
                report.commit_url = getattr(info, "commit_url", None)
    return report
