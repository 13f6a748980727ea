"""``skyrank publish``: validate a SkyRank dataset folder, plan, and upload it to a Hub dataset repo in one commit.

Steps of :func:`publish_dataset` (notes/hub.md §0, §4, §5, §7):

1. **Validate locally** and list *every* problem: every config/split loads with ``load_dataset`` from the folder
   (``skyrank.validate.validate_dataset``), the YAML metadata values are legal (licence, task and size categories),
   split names are legal, exactly one default config, data files are Parquet, and file/folder counts and sizes are
   within the Hub's limits (:mod:`skyrank.hub_limits`).
2. **Licence guard**, from each benchmark class's declared licence (``redistributable = False``: University-1652
   and SUES-200, whose terms forbid redistribution): a config with an ``image`` column for such a benchmark is
   refused for a public repo; it may go to a private or gated repo only with ``acknowledge_license=True``.
   Ids-only configs publish freely.
3. **Plan.** Configs, splits, rows, files and bytes, each file compared with the remote (LFS sha256 or git blob id
   from ``list_repo_tree``) → new / changed / unchanged, plus stale remote shards of the re-published configs that
   will be deleted. ``dry_run`` stops here; it makes read requests only.
4. **Upload.** ``create_repo(exist_ok=True)``, gating, then ONE ``upload_folder`` call from a staging copy (hard
   links) holding the merged README: the remote card's ``configs``/``dataset_info`` entries for other configs are
   kept, ours replace same-named ones, one default is kept. ``delete_patterns`` cover only the re-published
   configs' folders. Nothing is uploaded when the plan says everything is unchanged. Then ``create_tag``.

The token comes from ``token`` or ``HF_TOKEN`` and is never printed or put into an error message.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrank import hub_limits
from skyrank.errors import HubUnreachableError, PublishError, ValidationError
from skyrank.hub import FilePlan, PublishReport, hub_offline
from skyrank.hub import compare_with_remote as _compare
from skyrank.hub import hub_errors as _hub_errors
from skyrank.hub import progress_bars as _progress_bars
from skyrank.hub import resolve_token as _token
from skyrank.loading import (
    MANIFEST,
    README,
    config_benchmark,
    config_split_patterns,
    configs_by_name,
    dataset_infos_by_name,
    join_front_matter,
    list_folder_files,
    match_patterns,
    split_front_matter,
)

REPO_TYPE = "dataset"


# ------------------------------------------------------------------------------------------------ local validation
@dataclass
class _Local:
    folder: Path
    meta: dict[str, Any]
    body: str
    manifest: dict[str, Any]
    files: list[str]  # the files to upload (README, manifest, Parquet)
    config_files: dict[str, dict[str, list[str]]]  # config -> split -> files
    image_configs: set[str]
    rows: dict[str, dict[str, int]]


def _read_local(folder: Path) -> tuple[_Local, list[str], list[str]]:
    """The folder's description plus (problems, warnings). Never raises on bad content.

    Only what publishing adds is checked here (non-Parquet data files, the Hub's file limits): the folder itself is
    checked once, by :func:`skyrank.validate.validate_dataset` (:func:`_load_check`)."""
    import pyarrow.parquet as pq

    problems: list[str] = []
    warnings: list[str] = []
    meta: dict[str, Any] = {}
    body = ""
    manifest: dict[str, Any] = {}
    readme = folder / README
    if readme.is_file():
        with contextlib.suppress(Exception):  # an unreadable card is reported by validate_dataset
            meta, body = split_front_matter(readme.read_text(encoding="utf-8"))
    if (folder / MANIFEST).is_file():
        with contextlib.suppress(ValueError):  # reported by validate_dataset
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    else:
        warnings.append(f"{MANIFEST} is missing: build parameters and checksums will not be published")

    all_files = list_folder_files(folder)
    config_files: dict[str, dict[str, list[str]]] = {}
    rows: dict[str, dict[str, int]] = {}
    image_configs: set[str] = set()
    for name, cfg in configs_by_name(meta).items():
        for split, patterns in config_split_patterns(cfg).items():
            matched = match_patterns(patterns, all_files)
            if not matched:
                continue  # reported by validate_dataset
            config_files.setdefault(name, {})[split] = matched
            n = 0
            for rel in matched:
                if not rel.endswith(".parquet"):
                    problems.append(f"config {name!r}: {rel} is not a Parquet file (every config must be Parquet)")
                    continue
                try:
                    pf = pq.ParquetFile(folder / rel)
                    n += pf.metadata.num_rows
                    if "image" in pf.schema_arrow.names:
                        image_configs.add(name)
                except Exception:  # noqa: BLE001 - an unreadable file is reported by validate_dataset
                    pass
            rows.setdefault(name, {})[split] = n
    used = {f for splits in config_files.values() for fs in splits.values() for f in fs}
    extra = [f for f in all_files if f not in used and f not in (README, MANIFEST)]
    for rel in extra:
        warnings.append(f"{rel} belongs to no config and will not be uploaded")
    upload = sorted(used | ({README} if readme.is_file() else set()) | ({MANIFEST} if manifest else set()))
    if upload:
        p, w = hub_limits.check_files(folder, [folder / f for f in upload])
        problems.extend(p)
        warnings.extend(w)
    local = _Local(folder, meta, body, manifest, upload, config_files, image_configs, rows)
    return local, problems, warnings


def _load_check(folder: Path) -> list[str]:
    """Every problem :func:`skyrank.validate.validate_dataset` finds (the one check of a folder; it loads every
    config/split with ``load_dataset``)."""
    from skyrank.validate import validate_dataset

    try:
        validate_dataset(folder)
    except ValidationError as err:
        return list(err.problems) or [str(err)]
    return []


def _licence_problems(local: _Local, *, private: bool, gated: bool, acknowledge_license: bool) -> list[str]:
    """Image configs of a benchmark whose declared licence forbids redistribution (``Benchmark.redistributable``)."""
    from skyrank.benchmarks import restricted_benchmark

    manifest_bench = str(local.manifest.get("benchmark") or local.manifest.get("dataset") or "")
    restricted = []
    for cfg in sorted(local.image_configs):
        names = sorted({n for n in map(restricted_benchmark, (config_benchmark(cfg), manifest_bench)) if n})
        if names:
            restricted.append((cfg, names[0]))
    if not restricted:
        return []
    names = ", ".join(f"{c} ({b})" for c, b in restricted)
    benches = " / ".join(sorted({b for _, b in restricted}))
    if not (private or gated):
        return [
            f"refusing to publish {benches} image bytes to a public repo: {names}. "
            "Their terms forbid redistribution. Publish the ids-only dataset (build without --with-images), "
            "or use --private or --gated with written permission and --i-have-permission-to-redistribute"
        ]
    if not acknowledge_license:
        return [
            f"{names} embed {benches} images: pass --i-have-permission-to-redistribute (acknowledge_license=True) "
            "to confirm you may share them with the people who can access this private/gated repo"
        ]
    return []


# ------------------------------------------------------------------------------------------------ README merge
def _merge_cards(remote_meta: dict[str, Any], local_meta: dict[str, Any]) -> dict[str, Any]:
    """Our card's metadata with the remote's ``configs``/``dataset_info`` entries for other configs kept."""
    ours = configs_by_name(local_meta)
    theirs = configs_by_name(remote_meta)
    merged_configs: list[dict[str, Any]] = []
    for name, cfg in theirs.items():
        merged_configs.append(dict(ours[name]) if name in ours else dict(cfg))
    merged_configs += [dict(cfg) for name, cfg in ours.items() if name not in theirs]
    # One default: the remote's default stays unless it is one of the configs being re-published.
    remote_default = [n for n, c in theirs.items() if c.get("default")]
    local_default = [n for n, c in ours.items() if c.get("default")]
    if remote_default and remote_default[0] not in ours:
        default = remote_default[0]
    elif local_default:
        default = local_default[0]
    else:
        default = remote_default[0] if remote_default else None
    for cfg in merged_configs:
        cfg.pop("default", None)
        if cfg["config_name"] == default and len(merged_configs) > 1:
            cfg["default"] = True
    # Put the default first: the Hub viewer and load_dataset's builder inference look at the first config.
    merged_configs.sort(key=lambda c: not c.get("default", False))

    infos_ours = dataset_infos_by_name(local_meta)
    infos_theirs = dataset_infos_by_name(remote_meta)
    merged_infos = [infos_ours.get(n, i) for n, i in infos_theirs.items()]
    merged_infos += [i for n, i in infos_ours.items() if n not in infos_theirs]

    merged = {**{k: v for k, v in remote_meta.items() if k not in local_meta}, **local_meta}
    merged["configs"] = merged_configs
    if merged_infos:
        merged["dataset_info"] = merged_infos
    total_rows = 0
    for info in merged_infos:
        total_rows += sum(int(s.get("num_examples") or 0) for s in info.get("splits") or [])
    if "size_categories" in merged and total_rows:
        merged["size_categories"] = [hub_limits.size_category(total_rows)]
    return merged


def _merge_manifests(remote: dict[str, Any], ours: dict[str, Any], our_configs: set[str]) -> dict[str, Any]:
    """Our manifest, keeping the remote's ``files``/``tables`` entries of configs we do not re-publish."""
    merged = dict(ours)
    remote_files = remote.get("files")
    if isinstance(remote_files, dict) and isinstance(ours.get("files"), dict):
        kept = {p: v for p, v in remote_files.items() if p.split("/", 1)[0] not in our_configs}
        merged["files"] = {**kept, **ours["files"]}
    remote_tables = remote.get("tables")
    if isinstance(remote_tables, list) and isinstance(ours.get("tables"), list):
        kept_tables = [t for t in remote_tables if isinstance(t, dict) and t.get("config") not in our_configs]
        merged["tables"] = kept_tables + list(ours["tables"])
    return merged


# ------------------------------------------------------------------------------------------------ remote state
@dataclass
class _Remote:
    exists: bool = False
    private: bool | None = None
    gated: Any = None
    files: dict[str, Any] = field(default_factory=dict)  # path -> RepoFile
    meta: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    head: str | None = None


def _read_remote(api: Any, repo_id: str, revision: str | None, tmp: Path) -> _Remote:
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.hf_api import RepoFile

    remote = _Remote()
    try:
        info = api.dataset_info(repo_id)
    except hf_errors.RepositoryNotFoundError:
        return remote
    remote.exists, remote.private, remote.gated = True, bool(info.private), info.gated
    try:
        remote.head = api.dataset_info(repo_id, revision=revision).sha if revision else info.sha
    except hf_errors.RevisionNotFoundError:
        return remote  # a new branch: nothing to compare with
    rev = remote.head
    remote.files = {
        f.path: f for f in api.list_repo_tree(repo_id, repo_type=REPO_TYPE, revision=rev, recursive=True)
        if isinstance(f, RepoFile)
    }  # fmt: skip
    for name in (README, MANIFEST):
        if name in remote.files:
            path = api.hf_hub_download(repo_id, name, repo_type=REPO_TYPE, revision=rev, cache_dir=str(tmp / "dl"))
            text = Path(path).read_text(encoding="utf-8")
            if name == README:
                with contextlib.suppress(ValueError):
                    remote.meta, _ = split_front_matter(text)
            else:
                with contextlib.suppress(ValueError):
                    remote.manifest = json.loads(text)
    return remote


def _stage(folder: Path, files: list[str], generated: dict[str, str], parent: Path) -> Path:
    """A staging folder with hard links (copies across file systems) of ``files`` and the ``generated`` texts."""
    staging = Path(tempfile.mkdtemp(prefix=".skyrank-publish-", dir=parent))
    for rel in files:
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in generated:
            target.write_text(generated[rel], encoding="utf-8")
            continue
        try:
            os.link(folder / rel, target)
        except OSError:
            shutil.copy2(folder / rel, target)
    for rel, text in generated.items():
        if rel not in files:
            (staging / rel).write_text(text, encoding="utf-8")
    return staging


def _staging_parent(folder: Path) -> Path:
    parent = folder.resolve().parent
    return parent if os.access(parent, os.W_OK) else Path(tempfile.gettempdir())


# ------------------------------------------------------------------------------------------------ publish_dataset
def publish_dataset(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    gated: bool = False,
    create_pr: bool = False,
    revision: str | None = None,
    tag: str | None = None,
    dry_run: bool = False,
    endpoint: str | None = None,
    acknowledge_license: bool = False,
    commit_message: str | None = None,
    progress: bool = True,
) -> PublishReport:
    """Validate, plan and upload a SkyRank dataset folder to the Hub dataset repo ``repo_id`` (one commit).

    Args:
        folder: a dataset folder written by ``skyrank build`` (README.md, skyrank_manifest.json, Parquet shards).
        repo_id: ``owner/name`` of the dataset repo (created when missing).
        token: a Hub token with write access; default ``HF_TOKEN`` (then the locally saved login). Never printed.
        private: create the repo private (ignored when it exists; its current visibility is checked).
        gated: switch on manual access approval (``update_repo_settings(gated="manual")``).
        create_pr: open a pull request instead of committing to the branch.
        revision: the branch to commit to (created from ``main`` when missing).
        tag: tag the published commit (e.g. ``v1.0``).
        dry_run: validate and print the plan, then stop (read requests only).
        endpoint: the Hub endpoint (default: ``huggingface_hub``'s, ``HF_ENDPOINT``).
        acknowledge_license: confirm that University-1652 / SUES-200 images may go to this private/gated repo.
        commit_message: the commit title (default: a summary of the configs).
        progress: print the plan and show upload progress bars.

    Returns:
        a :class:`PublishReport` (the plan, and the commit when one was made).

    Raises:
        PublishError: local problems (all listed), the licence guard, or a Hub error with a fix-it message.
    """
    from huggingface_hub import HfApi, constants

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder: pass the output folder of `skyrank build`")
    if create_pr and revision not in (None, "main"):
        raise PublishError("--create-pr opens a pull request against main: leave --revision out")
    token = _token(token)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")

    # 1. local validation: collect every problem before refusing.
    local, problems, warnings = _read_local(folder)
    problems = _load_check(folder) + problems
    # 2. licence guard.
    problems.extend(_licence_problems(local, private=private, gated=gated, acknowledge_license=acknowledge_license))
    problems = list(dict.fromkeys(problems))
    if problems:
        raise PublishError(
            f"{folder} cannot be published ({len(problems)} problem(s)):\n" + "\n".join(f"  - {p}" for p in problems)
        )

    report = PublishReport(repo_id=repo_id, endpoint=endpoint, revision=revision, dry_run=dry_run,
                           configs=local.rows, warnings=warnings, tag=tag)  # fmt: skip
    api = HfApi(endpoint=endpoint, token=token)
    target_rev = None if create_pr else revision
    with tempfile.TemporaryDirectory(prefix="skyrank-publish-") as tmp_s, _progress_bars(progress):
        tmp = Path(tmp_s)
        # 3. plan against the remote (read requests only).
        try:
            if dry_run and hub_offline():
                raise HubUnreachableError(f"could not reach {endpoint} (HF_HUB_OFFLINE is set)")
            with _hub_errors(endpoint=endpoint, repo_id=repo_id, revision=revision, token=token):
                remote = _read_remote(api, repo_id, target_rev, tmp)
        except HubUnreachableError as e:
            if not dry_run:
                raise
            # A dry run still shows the local plan: every file "new", the remote unknown.
            remote = _Remote()
            report.remote_unknown = True
            report.warnings.append(f"{e}; could not compare with the Hub: every file is shown as new")
        report.remote_exists = remote.exists
        restricted = _licence_problems(local, private=False, gated=False, acknowledge_license=True)
        if restricted and remote.exists and not remote.private and not (remote.gated or gated):
            raise PublishError(
                f"{repo_id} already exists and is public: University-1652 / SUES-200 images may not go there. "
                "Make it private or gated on the Hub first (or pass --gated), or publish the ids-only dataset"
            )
        our_configs = set(local.config_files)
        merged_meta = _merge_cards(remote.meta, local.meta) if remote.meta else local.meta
        generated = {README: join_front_matter(merged_meta, local.body)}
        if local.manifest:
            manifest = _merge_manifests(remote.manifest, local.manifest, our_configs)
            generated[MANIFEST] = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        staging = _stage(folder, local.files, generated, _staging_parent(folder))
        try:
            for rel in local.files:
                path = staging / rel
                report.files.append(FilePlan(rel, path.stat().st_size, _compare(path, remote.files.get(rel))))
            our_dirs = sorted({f.split("/", 1)[0] for f in local.files if "/" in f})
            delete_patterns = [f"{d}/*" for d in our_dirs]
            uploading = set(local.files)
            for rel, rf in sorted(remote.files.items()):
                if rel not in uploading and any(rel.startswith(d + "/") for d in our_dirs):
                    report.files.append(FilePlan(rel, rf.size, "deleted"))
            if progress:
                print(report.format_plan())
            if dry_run:
                return report

            # 4. write.
            with _hub_errors(endpoint=endpoint, repo_id=repo_id, revision=revision, token=token):
                if not remote.exists:
                    api.create_repo(repo_id, repo_type=REPO_TYPE, exist_ok=True, private=private)
                if gated and remote.gated in (None, False):
                    api.update_repo_settings(repo_id, repo_type=REPO_TYPE, gated="manual")
                if revision not in (None, "main") and not create_pr:
                    api.create_branch(repo_id, branch=revision, repo_type=REPO_TYPE, exist_ok=True)
                if report.changes:
                    message = commit_message or "SkyRank: publish " + ", ".join(sorted(our_configs))
                    info = api.upload_folder(
                        repo_id=repo_id,
                        repo_type=REPO_TYPE,
                        folder_path=str(staging),
                        allow_patterns=list(local.files),
                        delete_patterns=delete_patterns,
                        commit_message=message,
                        revision=target_rev,
                        create_pr=create_pr,
                    )
                    report.uploaded = True
                    report.commit_oid = getattr(info, "oid", None)
                    report.commit_url = getattr(info, "commit_url", None)
                    report.pr_url = getattr(info, "pr_url", None)
                else:
                    report.commit_oid = remote.head
                if tag:
                    _tag(api, repo_id, tag, report.commit_oid or revision or "main")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return report


def _tag(api: Any, repo_id: str, tag: str, revision: str) -> None:
    from huggingface_hub import errors as hf_errors

    try:
        api.create_tag(repo_id, tag=tag, revision=revision, repo_type=REPO_TYPE)
    except hf_errors.HfHubHTTPError as err:
        if err.response is None or err.response.status_code != 409:
            raise
        refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE)
        existing = {t.name: t.target_commit for t in refs.tags}
        if existing.get(tag) != revision:
            raise PublishError(
                f"tag {tag!r} already exists in {repo_id} at another commit: choose a new tag (e.g. bump the version)"
            ) from None
