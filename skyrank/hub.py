"""Public helpers of the Hugging Face Hub that both halves publish with: upload plans and reports, remote file
comparison (LFS sha256 or git blob id), fix-it error messages, progress bars and the token rule.

:mod:`skyrank.publish` (datasets) and :mod:`skylink_model.publish_model` (SkyLink runs) both use them; the token
comes from ``token`` or ``HF_TOKEN`` and is never printed or put into an error message (:func:`scrub`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrank.errors import HubRequestError, HubUnreachableError, PublishError


@dataclass
class FilePlan:
    """One file of the upload and how it compares with the remote."""

    path: str
    size: int
    status: str  # "new" | "changed" | "unchanged" | "deleted"


@dataclass
class PublishReport:
    """What :func:`publish_dataset` / :func:`publish_model` planned and did."""

    repo_id: str
    endpoint: str
    revision: str | None
    dry_run: bool
    configs: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> rows
    files: list[FilePlan] = field(default_factory=list)
    remote_exists: bool = False
    remote_unknown: bool = False  # a dry run that could not reach the Hub
    uploaded: bool = False
    commit_oid: str | None = None
    commit_url: str | None = None
    pr_url: str | None = None
    tag: str | None = None
    warnings: list[str] = field(default_factory=list)

    def by_status(self, status: str) -> list[str]:
        return [f.path for f in self.files if f.status == status]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files if f.status != "deleted")

    @property
    def changes(self) -> bool:
        return any(f.status != "unchanged" for f in self.files)

    def format_plan(self) -> str:
        """A human-readable plan (no secrets in it)."""
        lines = [f"Publish plan for {self.endpoint}/datasets/{self.repo_id}"
                 + (f" @ {self.revision}" if self.revision else "")
                 + (" (remote unknown: not compared)" if self.remote_unknown
                    else "" if self.remote_exists else " (new repo)")]  # fmt: skip
        if self.configs:
            lines.append("  configs:")
            for cfg, splits in sorted(self.configs.items()):
                split_txt = ", ".join(f"{s}: {n:,} rows" for s, n in sorted(splits.items()))
                lines.append(f"    {cfg}  ({split_txt})")
        counts = {s: len(self.by_status(s)) for s in ("new", "changed", "unchanged", "deleted")}
        lines.append(
            f"  files: {len([f for f in self.files if f.status != 'deleted'])} ({human_size(self.total_bytes)}); "
            + ", ".join(f"{n} {s}" for s, n in counts.items())
        )
        for f in self.files:
            if f.status != "unchanged":
                lines.append(f"    {f.status:9s} {f.path}  ({human_size(f.size)})")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        if not self.changes:
            lines.append("  nothing to upload: the remote already holds exactly these files")
        if self.dry_run:
            lines.append("  dry run: nothing was written")
        return "\n".join(lines)


def human_size(n: int) -> str:
    """``n`` bytes as a short decimal size (``1.5 MB``)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def sha256_file(path: Path) -> str:
    """sha256 of a file (what the Hub stores for an LFS file), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """git blob id of a file (what the Hub reports for a non-LFS file)."""
    h = hashlib.sha1()
    h.update(b"blob " + str(path.stat().st_size).encode() + b"\0")
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set (huggingface_hub then refuses every request)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def resolve_token(token: str | None) -> str | None:
    """``token``, else ``HF_TOKEN``, else None (anonymous)."""
    return token or os.environ.get("HF_TOKEN") or None


def scrub(text: str, token: str | None) -> str:
    """``text`` with the token replaced by ``***`` (for error messages)."""
    return text.replace(token, "***") if token else text


def map_error(err: BaseException, *, endpoint: str, repo_id: str, revision: str | None, token: str | None) -> None:
    """Raise :class:`PublishError` with a fix-it message for a Hub / network error."""
    import httpx2
    from huggingface_hub import errors as hf_errors

    if isinstance(err, PublishError):
        raise err
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, (hf_errors.HfHubHTTPError, httpx2.TransportError)):
        cause = cause.__cause__
    if cause is not None and cause is not err:
        err = cause
    if isinstance(err, hf_errors.RevisionNotFoundError):
        raise PublishError(
            f"revision {revision!r} not found in {repo_id}: create the branch first or leave --revision out"
        ) from None
    if isinstance(err, hf_errors.HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
        server_msg = scrub(err.server_message or "", token)
        if status == 401:
            raise PublishError("token invalid: set HF_TOKEN or pass --token (a token with write access)") from None
        if status == 403:
            raise PublishError(
                f"no write access to {repo_id}: use a token with write permission for this namespace "
                f"({server_msg or 'forbidden'})"
            ) from None
        if status == 404:
            raise PublishError(
                f"{repo_id} or revision {revision or 'main'} not found on {endpoint} ({server_msg or 'not found'})"
            ) from None
        if status >= 500 or status == 429:
            raise PublishError(
                f"the Hub at {endpoint} answered {status} ({server_msg or 'server error'}); nothing partial was "
                "committed: re-run the same command to retry (already uploaded files are skipped)"
            ) from None
        raise PublishError(f"the Hub refused the upload ({status}): {server_msg or scrub(str(err), token)}") from None
    if isinstance(err, (httpx2.TransportError, ConnectionError, TimeoutError)):
        offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
        raise HubUnreachableError(
            f"could not reach {endpoint}{offline}: check the network / --endpoint and re-run",
            hint="Unset HF_HUB_OFFLINE or fix the network; --dry-run works offline (it shows the local plan).",
        ) from None
    if isinstance(err, ValueError) and "Invalid metadata in README.md" in str(err):
        raise PublishError(f"the Hub rejected the README metadata: {scrub(str(err), token)}") from None
    raise PublishError(f"publishing to {repo_id} failed: {type(err).__name__}: {scrub(str(err), token)}") from None


@contextlib.contextmanager
def hub_errors(*, endpoint: str, repo_id: str, revision: str | None, token: str | None) -> Iterator[None]:
    """Turn any Hub / network error raised inside into a :class:`PublishError` (:func:`map_error`)."""
    try:
        yield
    except PublishError:
        raise
    except Exception as err:  # noqa: BLE001 - mapped to PublishError
        map_error(err, endpoint=endpoint, repo_id=repo_id, revision=revision, token=token)


def download_error(
    err: BaseException, *, repo_id: str, repo_type: str, revision: str | None, endpoint: str | None,
    token: str | None,
) -> HubRequestError | None:  # fmt: skip
    """The :class:`HubRequestError` (with its fix) of a failed Hub read (a dataset or a model download), or
    ``None`` when ``err`` is not a Hub / network error. One message per answer: 401, 403 (gated or private), 404
    (repo, revision or file), 429, 5xx, no answer, offline and not cached."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub import errors as hf_errors

    chain: list[BaseException] = []
    link: BaseException | None = err
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    # The Hub's answer first: snapshot_download wraps it in "not in the local cache" when nothing is cached.
    cause = next(
        (c for kinds in (hf_errors.HfHubHTTPError, httpx2.TransportError, hf_errors.LocalEntryNotFoundError)
         for c in chain if isinstance(c, kinds)),
        None,
    )  # fmt: skip
    if cause is None:
        return None
    endpoint = endpoint or constants.ENDPOINT
    kind = "dataset" if repo_type == "dataset" else "model"
    page = f"{endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    at = f" at revision {revision}" if revision else ""
    if isinstance(cause, hf_errors.LocalEntryNotFoundError):
        return HubRequestError(
            f"the {kind} {repo_id}{at} is not in the local Hub cache and the Hub was not asked "
            f"({'HF_HUB_OFFLINE is set' if hub_offline() else scrub(str(cause), token).splitlines()[0]})",
            hint="Unset HF_HUB_OFFLINE (or fix the network) to download it once; later runs work offline.",
        )
    if isinstance(cause, httpx2.TransportError):
        return HubRequestError(
            f"could not reach {endpoint} to download the {kind} {repo_id} ({type(cause).__name__})",
            hint="Check the network (or --endpoint / HF_ENDPOINT) and re-run; files already downloaded are kept.",
        )
    status = cause.response.status_code if getattr(cause, "response", None) is not None else None
    server = scrub(getattr(cause, "server_message", None) or "", token)
    detail = f" ({server})" if server else ""
    if isinstance(cause, hf_errors.GatedRepoError) or status == 403:
        return HubRequestError(
            f"access to the {kind} {repo_id} is refused (403): it is gated or private{detail}",
            status=status,
            hint=f"Accept its conditions at {page} with the account of your token, or set HF_TOKEN (or --token) to "
            "a token with read access to it.",
        )
    if status == 401:
        tok = "the token given was refused" if resolve_token(token) else "no token was given"
        return HubRequestError(
            f"the Hub refused to serve the {kind} {repo_id} (401): {tok}{detail}",
            status=status,
            hint="Set HF_TOKEN (or pass --token) to a valid token with read access (huggingface.co/settings/tokens); "
            "a private repo needs one, a public repo works without.",
        )
    if isinstance(cause, hf_errors.RevisionNotFoundError):
        return HubRequestError(
            f"revision {revision!r} of the {kind} {repo_id} not found (404){detail}",
            status=status,
            hint="Pass an existing branch, tag or commit as --revision, or leave it out for main.",
        )
    if status == 404:
        return HubRequestError(
            f"the {kind} {repo_id}{at} was not found on {endpoint} (404){detail}",
            status=status,
            hint="Check the repo id (owner/name) and --revision; a private repo is also 404 without a token "
            "(set HF_TOKEN).",
        )
    if status == 429:
        return HubRequestError(
            f"the Hub rate-limited the download of the {kind} {repo_id} (429 Too Many Requests){detail}",
            status=status,
            hint="Wait a few minutes and re-run (files already downloaded are kept); requests with a token "
            "(HF_TOKEN) get a higher limit.",
        )
    if status is not None and status >= 500:
        return HubRequestError(
            f"the Hub at {endpoint} failed to serve the {kind} {repo_id} ({status}){detail}",
            status=status,
            hint="A fault on the Hub's side: re-run later (files already downloaded are kept); "
            "https://status.huggingface.co shows outages.",
        )
    return HubRequestError(
        f"the Hub refused the download of the {kind} {repo_id} ({status}): {server or scrub(str(cause), token)}",
        status=status,
        hint="Check the repo id, --revision and HF_TOKEN, then re-run.",
    )


@contextlib.contextmanager
def download_errors(
    *, repo_id: str, repo_type: str, revision: str | None = None, endpoint: str | None = None,
    token: str | None = None,
) -> Iterator[None]:  # fmt: skip
    """Turn a Hub / network error of a download inside into a :class:`HubRequestError` (:func:`download_error`)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - mapped, or re-raised unchanged
        named = download_error(err, repo_id=repo_id, repo_type=repo_type, revision=revision, endpoint=endpoint,
                               token=token)  # fmt: skip
        if named is None:
            raise
        raise named from err


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Hide huggingface_hub's progress bars for the duration unless ``enabled``."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()



# ------------------------------------------------------------------------------------------------ remote state
def read_remote_model(api: Any, repo_id: str) -> tuple[bool, dict[str, Any]]:
    """(exists, {path: RepoFile}) of a model repo's ``main``."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.hf_api import RepoFile

    try:
        entries = api.list_repo_tree(repo_id, repo_type="model", recursive=True)
        return True, {f.path: f for f in entries if isinstance(f, RepoFile)}
    except hf_errors.RepositoryNotFoundError:
        return False, {}


def compare_with_remote(path: Path, remote_file: Any | None) -> str:
    """``new``, ``changed`` or ``unchanged``: a local file against the remote ``RepoFile`` of the same path."""
    if remote_file is None:
        return "new"
    if remote_file.size != path.stat().st_size:
        return "changed"
    if remote_file.lfs is not None:
        same = remote_file.lfs.sha256 == sha256_file(path)
    else:
        same = remote_file.blob_id == git_blob_sha1(path)
    return "unchanged" if same else "changed"
