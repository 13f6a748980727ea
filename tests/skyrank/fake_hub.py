"""A small Hugging Face Hub-compatible HTTP server for tests (stdlib only, 127.0.0.1, in memory).

It implements exactly the routes that the real ``huggingface_hub`` 2.x client (with ``HF_HUB_DISABLE_XET=1``) and
``datasets.load_dataset`` call for the publishing and loading code paths:

* ``POST /api/repos/create`` (``create_repo``), ``PUT /api/<type>s/<repo>/settings`` (``update_repo_settings``);
* ``GET /api/<type>s/<repo>[/revision/<rev>]`` (``repo_info`` / ``dataset_info``);
* ``GET /api/<type>s/<repo>/tree/<rev>[/<path>]`` (``list_repo_tree`` / ``list_repo_files``, ``recursive``),
  ``POST /api/<type>s/<repo>/paths-info/<rev>``, ``GET /api/<type>s/<repo>/refs``;
* ``POST /api/validate-yaml`` (README metadata check made by ``create_commit``);
* ``POST /api/<type>s/<repo>/preupload/<rev>`` (upload modes and remote oids);
* ``POST /<prefix><repo>.git/info/lfs/objects/batch`` + ``PUT /_lfs/<oid>`` (the basic LFS transfer);
* ``POST /api/<type>s/<repo>/commit/<rev>`` (NDJSON ``header``/``file``/``lfsFile``/``deletedFile``/``deletedFolder``,
  ``create_pr=1``, ``parentCommit``);
* ``POST /api/<type>s/<repo>/branch/<branch>``, ``POST /api/<type>s/<repo>/tag/<rev>``;
* ``HEAD``/``GET /<prefix><repo>/resolve/<rev>/<path>`` with ``ETag``, ``X-Repo-Commit``, ``X-Linked-Etag``,
  ``X-Linked-Size``, ``Content-Length`` and ``Range`` support.

Every request is recorded as ``(method, path)`` in :attr:`FakeHub.requests`; :meth:`FakeHub.fail_next` makes the
next request of a kind (``"commit"``, ``"preupload"``, ``"lfs_batch"``, ``"lfs_upload"``, ...) fail with a status.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")
#: Routes that only read although they are POSTs.
READ_ONLY_POST_KINDS = ("paths_info", "validate_yaml")

LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".arrow", ".png", ".jpg", ".jpeg", ".zip")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

GITATTRIBUTES = (
    b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.arrow filter=lfs diff=lfs merge=lfs -text\n"
)

_REPO_RE = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)(/.*)?$")
_RESOLVE_RE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")
_LFS_BATCH_RE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)\.git/info/lfs/objects/batch$")

_VALID_LICENSES = {
    "apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0",
    "cc0-1.0", "odc-by", "odbl", "other", "unknown", "gpl-3.0", "bsd-3-clause", "openrail",
}  # fmt: skip


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as ``oid`` for regular files)."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class StoredFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_oid(self) -> str:
        return git_blob_sha1(lfs_pointer(self.sha256, len(self.data)) if self.lfs else self.data)

    def tree_entry(self, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": self.blob_oid, "size": len(self.data), "path": path}
        if self.lfs:
            pointer = lfs_pointer(self.sha256, len(self.data))
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(pointer)}
        return entry


@dataclass
class Commit:
    oid: str
    files: dict[str, StoredFile]
    message: str
    parent: str | None


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    gated: Any = False
    refs: dict[str, str] = field(default_factory=dict)  # branch / tag / refs/pr/N -> commit oid
    tags: set[str] = field(default_factory=set)
    commits: dict[str, Commit] = field(default_factory=dict)
    n_prs: int = 0

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        if revision in self.commits:
            return self.commits[revision]
        return None


class HttpError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


class FakeHub:
    """An in-memory Hub. Use as a context manager; :attr:`endpoint` is ``http://127.0.0.1:<port>``.

    ``tokens`` maps accepted tokens to ``"write"`` or ``"read"``; ``None`` accepts any request (anonymous too).
    """

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.tokens = tokens
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.request_log: list[dict[str, Any]] = []
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.RLock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ----------------------------------------------------------------- test helpers
    def fail_next(self, kind: str, status: int = 500, times: int = 1) -> None:
        """Make the next ``times`` requests of ``kind`` (e.g. ``"commit"``) answer ``status``."""
        with self._lock:
            self._failures.setdefault(kind, []).extend([status] * times)

    def write_requests(self) -> list[tuple[str, str]]:
        """Requests that could change server state."""
        return [
            (r["method"], r["path"])
            for r in self.request_log
            if r["method"] in WRITE_METHODS and r["kind"] not in READ_ONLY_POST_KINDS
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_log.clear()

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        commit = self.repo(repo_id, repo_type).resolve(revision)
        assert commit is not None, f"no revision {revision}"
        return {path: f.data for path, f in commit.files.items()}

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[Commit]:
        """The commits of ``main``, newest first."""
        repo = self.repo(repo_id, repo_type)
        out = []
        oid: str | None = repo.refs.get("main")
        while oid is not None:
            commit = repo.commits[oid]
            out.append(commit)
            oid = commit.parent
        return out

    # ----------------------------------------------------------------- internals
    def _new_oid(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1("\0".join([*parts, str(self._counter), str(time.time())]).encode()).hexdigest()

    def _take_failure(self, kind: str) -> int | None:
        with self._lock:
            queue = self._failures.get(kind)
            if queue:
                return queue.pop(0)
        return None

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HttpError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def _get_commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit


def _plural_to_type(plural: str | None) -> str:
    return {"datasets": "dataset", "spaces": "space", "models": "model", None: "model"}[plural]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # ------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, err: HttpError) -> None:
        headers = {"X-Error-Message": err.message}
        if err.error_code:
            headers["X-Error-Code"] = err.error_code
        self._send(err.status, json.dumps({"error": err.message}).encode(), headers, head=self.command == "HEAD")

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _check_auth(self, write: bool) -> None:
        tokens = self.fake.tokens
        if tokens is None:
            return
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if token is None:
            if write:
                raise HttpError(401, "Invalid credentials in Authorization header")
            return
        if token not in tokens:
            raise HttpError(401, "Invalid credentials in Authorization header")
        if write and tokens[token] != "write":
            raise HttpError(403, "You don't have the rights to write to this repository")

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        raw_path, query = split.path, parse_qs(split.query)
        kind = "unknown"
        try:
            body = self._body() if self.command in ("POST", "PUT") else b""
            handler, kind, args = self._route(raw_path)
            with self.fake._lock:
                self.fake.requests.append((self.command, unquote(raw_path)))
                self.fake.request_log.append({"method": self.command, "path": unquote(raw_path), "kind": kind})
            status = self.fake._take_failure(kind)
            if status is not None:
                raise HttpError(status, f"Injected failure for {kind}")
            is_write = self.command in WRITE_METHODS and kind not in READ_ONLY_POST_KINDS
            if kind != "lfs_upload":  # the upload href is pre-signed, like an S3 URL: no Authorization header
                self._check_auth(write=is_write)
            with self.fake._lock:
                handler(*args, query=query, body=body)
        except HttpError as err:
            self._error(err)
        except Exception as err:  # a bug in the fake: surface it as a 500 with the message
            self._error(HttpError(500, f"fake hub error in {kind}: {type(err).__name__}: {err}"))

    def _route(self, raw_path: str) -> tuple[Any, str, tuple]:
        if raw_path == "/api/repos/create" and self.command == "POST":
            return self._create_repo, "create_repo", ()
        if raw_path == "/api/validate-yaml" and self.command == "POST":
            return self._validate_yaml, "validate_yaml", ()
        if raw_path.startswith("/_lfs/") and self.command == "PUT":
            return self._lfs_upload, "lfs_upload", (raw_path[len("/_lfs/") :],)
        match = _LFS_BATCH_RE.match(raw_path)
        if match and self.command == "POST":
            return self._lfs_batch, "lfs_batch", (_plural_to_type(match[1]), f"{match[2]}/{match[3]}")
        match = _REPO_RE.match(raw_path)
        if match:
            repo_type, repo_id, rest = _plural_to_type(match[1]), f"{match[2]}/{match[3]}", match[4] or ""
            segments = rest.split("/")[1:] if rest else []
            action = segments[0] if segments else ""
            tail = [unquote(s) for s in segments[1:]]
            routes = {
                ("GET", ""): (self._repo_info, "repo_info"),
                ("GET", "revision"): (self._repo_info, "repo_info"),
                ("GET", "tree"): (self._tree, "tree"),
                ("GET", "refs"): (self._refs, "refs"),
                ("POST", "paths-info"): (self._paths_info, "paths_info"),
                ("POST", "preupload"): (self._preupload, "preupload"),
                ("POST", "commit"): (self._commit, "commit"),
                ("POST", "tag"): (self._create_tag, "create_tag"),
                ("POST", "branch"): (self._create_branch, "create_branch"),
                ("PUT", "settings"): (self._settings, "settings"),
            }
            method = "GET" if self.command == "HEAD" else self.command
            if (method, action) in routes:
                handler, kind = routes[(method, action)]
                return handler, kind, (repo_type, repo_id, tail)
        match = _RESOLVE_RE.match(raw_path)
        if match and self.command in ("GET", "HEAD"):
            repo_type, repo_id = _plural_to_type(match[1]), f"{match[2]}/{match[3]}"
            return self._resolve, "resolve", (repo_type, repo_id, unquote(match[4]), unquote(match[5]))
        raise HttpError(404, f"fake hub: no route for {self.command} {raw_path}")

    # ------------------------------------------------------------ repos
    def _create_repo(self, *, query: dict, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.fake.endpoint}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.fake.repos:
            message = f"You already created this {repo_type} repo"
            self._json(409, {"error": message, "url": url}, {"X-Error-Message": message})
            return
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=payload.get("visibility") == "private")
        oid = self.fake._new_oid(repo_id, "initial")
        repo.commits[oid] = Commit(oid, {".gitattributes": StoredFile(GITATTRIBUTES, False)}, "initial commit", None)
        repo.refs["main"] = oid
        self.fake.repos[(repo_type, repo_id)] = repo
        self._json(200, {"url": url, "name": repo_id, "id": oid})

    def _settings(self, repo_type: str, repo_id: str, tail: list[str], *, query: dict, body: bytes) -> None:
        repo = self.fake._get_repo(repo_type, repo_id)
        payload = json.loads(body or b"{}")
        if "gated" in payload:
            repo.gated = payload["gated"]
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        self._json(200, {})

    def _repo_info(self, repo_type: str, repo_id: str, tail: list[str], *, query: dict, body: bytes) -> None:
        repo = self.fake._get_repo(repo_type, repo_id)
        commit = self.fake._get_commit(repo, tail[0] if tail else "main")
        info: dict[str, Any] = {
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        readme = commit.files.get("README.md")
        if readme is not None:
            card = _front_matter(readme.data.decode("utf-8", "replace"))
            if card:
                info["cardData"] = card
        self._json(200, info)

    def _refs(self, repo_type: str, repo_id: str, tail: list[str], *, query: dict, body: bytes) -> None:
        repo = self.fake._get_repo(repo_type, repo_id)
        branches = [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": o}
            for n, o in repo.refs.items()
            if n not in repo.tags and not n.startswith("refs/")
        ]
        tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": repo.refs[n]} for n in sorted(repo.tags)]
        self._json(200, {"branches": branches, "tags": tags, "converts": []})

    def _create_branch(self, repo_type: str, repo_id: str, tail: list[str], *, query: dict, body: bytes) -> None:
        repo = self.fake._get_repo(repo_type, repo_id)
        branch = "/".join(tail)
        payload = json.loads(body or b"{}")
        if branch in repo.refs:
            raise HttpError(409, f"Reference already exists: {branch}")
        start = self.fake._get_commit(repo, payload.get("startingPoint") or "main")
        repo.refs[branch] = start.oid
        self._json(200, {})

    def _create_tag(self, repo_type: str, repo_id: str, tail: list[str], *, query: dict, body: bytes) -> None:
        repo = self.fake._get_repo(repo_type, repo_id)
        commit = self.fake._get_commit(repo, "/".join(tail) or "main")
        tag = json.loads(body or b"{}")["tag"]
        if tag in repo.refs:
            raise HttpError(409, f"Tag already exists: {tag}")
        repo.refs[tag] = commit.oid
        repo.tags.add(tag)
        self._json(200, {})

    # ------------------------------------------------------------ listing
    def _tree(self, repo_type: str, repo_id: str, tail: list[str], *, query: dict, body: bytes) -> None:
        repo = self.fake._get_repo(repo_type, repo_id)
        commit = self.fake._get_commit(repo, tail[0])
        prefix = "/".join(tail[1:]).strip("/")
        recursive = query.get("recursive", ["False"])[0].lower() in ("1", "true")
        base = prefix + "/" if prefix else ""
        if prefix and not any(p.startswith(base) for p in commit.files):
            raise HttpError(404, f"Entry not found: {prefix}", "EntryNotFound")
        entries: dict[str, dict[str, Any]] = {}
        for path in sorted(commit.files):
            if not path.startswith(base):
                continue
            rest = path[len(base) :].split("/")
            for depth in range(1, len(rest)):
                folder = base + "/".join(rest[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "oid": git_blob_sha1(folder.encode()), "size": 0,
                                                "path": folder})  # fmt: skip
            if recursive or len(rest) == 1:
                entries[path] = commit.files[path].tree_entry(path)
        self._json(200, [entries[k] for k in sorted(entries)])

    def _paths_info(self, repo_type: str, repo_id: str, tail: list[str], *, query: dict, body: bytes) -> None:
        repo = self.fake._get_repo(repo_type, repo_id)
        commit = self.fake._get_commit(repo, tail[0])
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(commit.files[path].tree_entry(path))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append({"type": "directory", "oid": git_blob_sha1(path.encode()), "size": 0, "path": path})
        self._json(200, out)

    # ------------------------------------------------------------ uploads
    def _validate_yaml(self, *, query: dict, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        try:
            meta = _front_matter(payload.get("content", ""))
        except yaml.YAMLError as err:
            self._json(400, {"errors": [{"message": f"Invalid YAML: {err}"}], "warnings": []})
            return
        errors = []
        lic = meta.get("license")
        for value in lic if isinstance(lic, list) else [lic] if lic is not None else []:
            if value not in _VALID_LICENSES:
                errors.append({"message": f'"license" must be a valid license identifier, got "{value}"'})
        if errors:
            self._json(400, {"errors": errors, "warnings": []})
            return
        self._json(200, {"errors": [], "warnings": []})

    @staticmethod
    def _is_lfs(path: str, size: int, sample: bytes) -> bool:
        return path.endswith(LFS_SUFFIXES) or size > LFS_SIZE_THRESHOLD or b"\0" in sample

    def _preupload(self, repo_type: str, repo_id: str, tail: list[str], *, query: dict, body: bytes) -> None:
        repo = self.fake._get_repo(repo_type, repo_id)
        create_pr = query.get("create_pr", ["0"])[0] == "1"
        commit = self.fake._get_commit(repo, "main" if create_pr else tail[0])
        files = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item.get("sample", ""))
            lfs = self._is_lfs(item["path"], int(item["size"]), sample)
            existing = commit.files.get(item["path"])
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else git_blob_sha1(existing.data)
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})  # fmt: skip
        self._json(200, {"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, repo_type: str, repo_id: str, *, query: dict, body: bytes) -> None:
        self.fake._get_repo(repo_type, repo_id)
        payload = json.loads(body)
        objects = []
        for obj in payload.get("objects", []):
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.fake.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.fake.endpoint}/_lfs/{obj['oid']}", "header": {}}}
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   {"Content-Type": "application/vnd.git-lfs+json"})  # fmt: skip

    def _lfs_upload(self, oid: str, *, query: dict, body: bytes) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HttpError(400, f"LFS object sha256 mismatch for {oid}")
        self.fake.lfs_objects[oid] = body
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def _commit(self, repo_type: str, repo_id: str, tail: list[str], *, query: dict, body: bytes) -> None:
        repo = self.fake._get_repo(repo_type, repo_id)
        revision = "/".join(tail) or "main"
        create_pr = query.get("create_pr", ["0"])[0] == "1"
        if create_pr and revision == "main":
            base = self.fake._get_commit(repo, "main")
        else:
            if revision in repo.tags:
                raise HttpError(400, f"Cannot commit to a tag: {revision}")
            base = self.fake._get_commit(repo, revision)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        if header.get("parentCommit") and header["parentCommit"] != base.oid:
            raise HttpError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(base.files)
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                files[value["path"]] = StoredFile(data, self._is_lfs(value["path"], len(data), data[:512]))
            elif key == "lfsFile":
                data = self.fake.lfs_objects.get(value["oid"])
                if data is None:
                    raise HttpError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = StoredFile(data, True)
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HttpError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
        oid = self.fake._new_oid(repo_id, header.get("summary", ""), base.oid)
        repo.commits[oid] = Commit(oid, files, header.get("summary", ""), base.oid)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        pr_url = None
        if create_pr:
            repo.n_prs += 1
            repo.refs[f"refs/pr/{repo.n_prs}"] = oid
            pr_url = f"{self.fake.endpoint}/{prefix}{repo_id}/discussions/{repo.n_prs}"
        else:
            repo.refs[revision] = oid
        self._json(200, {"commitUrl": f"{self.fake.endpoint}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": pr_url, "success": True})  # fmt: skip

    # ------------------------------------------------------------ downloads
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str, *, query: dict, body: bytes) -> None:
        repo = self.fake._get_repo(repo_type, repo_id)
        commit = self.fake._get_commit(repo, revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HttpError(404, f"Entry not found: {path}", "EntryNotFound")
        data = stored.data
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{stored.sha256 if stored.lfs else stored.blob_oid}"',
            "Accept-Ranges": "bytes",
        }
        if stored.lfs:
            headers["X-Linked-Etag"] = f'"{stored.sha256}"'
            headers["X-Linked-Size"] = str(len(data))
        status = 200
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes=") and self.command == "GET":
            start_s, _, end_s = range_header[len("bytes=") :].partition("-")
            if start_s == "":
                start, end = max(0, len(data) - int(end_s)), len(data) - 1
            else:
                start, end = int(start_s), min(int(end_s) if end_s else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start : end + 1]
            status = 206
        headers["Content-Length"] = str(len(data))
        self._send(status, data, headers, head=self.command == "HEAD")


def _front_matter(text: str) -> dict[str, Any]:
    if not text.startswith("---"):
        return {}
    parts = text.split("\n---", 1)
    if len(parts) < 2:
        return {}
    loaded = yaml.safe_load(parts[0][3:]) or {}
    return loaded if isinstance(loaded, dict) else {}


# ----------------------------------------------------------------------------------------------- test data helpers
LABELS = ("0001", "0002", "0003", "0004")


def make_images(root: Any) -> Any:
    """A tiny benchmark in the University-1652 layout: one satellite and two drone PNGs per location."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    for i, label in enumerate(LABELS):
        for view, names in (("satellite", [f"{label}.png"]), ("drone", ["image-01.png", "image-02.png"])):
            for k, name in enumerate(names):
                path = root / view / label / name
                path.parent.mkdir(parents=True, exist_ok=True)
                color = (40 * i + 10 * k, 255 - 40 * i, 80 + 30 * k)
                Image.new("RGB", (8 + i, 6 + k), color).save(path)
    return root


def make_dataset_folder(
    out: Any,
    images_root: Any,
    *,
    benchmark: str = "synthetic",
    retriever: str = "tiny",
    with_images: bool = False,
    splits: tuple[str, ...] = ("test",),
    license: str = "cc-by-4.0",  # noqa: A002 - the card key
    default: bool = True,
) -> Any:
    """A small SkyRank folder written with :class:`skyrank.writer.DatasetWriter` and a README like the real card."""
    from pathlib import Path

    from skyrank.format import schema
    from skyrank.loading import join_front_matter
    from skyrank.writer import DatasetWriter

    images_root = Path(images_root)
    gallery = [(f"satellite/{label}/{label}.png", label, "satellite") for label in LABELS]
    queries = [(f"drone/{label}/image-0{k}.png", label, "drone") for label in LABELS for k in (1, 2)]
    gallery_cfg = schema.gallery_config_name(benchmark)
    queries_cfg = schema.queries_config_name(benchmark)
    retr_cfg = schema.retriever_config_name(retriever, benchmark, "d2s")
    tables = []
    with DatasetWriter(out, overwrite=True) as writer:
        for split in splits:
            for cfg, recs in ((gallery_cfg, gallery), (queries_cfg, queries)):
                rows = [{"image_id": i, "label": lab, "view": v, "path": i} for i, lab, v in recs]
                feats = schema.features_for(cfg, with_images=with_images)
                root = images_root if with_images else None
                tables.append(writer.add_table(cfg, split, rows, feats, images_root=root))
            rows = []
            for qid, label, _ in queries:
                gt = f"satellite/{label}/{label}.png"
                others = [g for g, lab, _ in gallery if lab != label]
                rows.append({
                    "query_id": qid, "label": label, "gt_id": gt, "gt_rank": 1, "gt_score": 0.9,
                    "positive_ids": [gt], "positive_ranks": [1], "candidate_ids": others,
                    "candidate_scores": [0.5, 0.4, 0.3], "candidate_gt_similarity": [0.2, 0.1, 0.0],
                    "retrieved_ids": [gt, *others], "retrieved_scores": [0.9, 0.5, 0.4, 0.3],
                })  # fmt: skip
            tables.append(writer.add_table(retr_cfg, split, rows, schema.RETRIEVER_FEATURES))
        configs: dict[str, dict[str, Any]] = {}
        infos: dict[str, dict[str, Any]] = {}
        for t in tables:
            entry = configs.setdefault(t.config, {"config_name": t.config, "data_files": []})
            entry["data_files"].append({"split": t.split, "path": f"{t.config}/{t.split}-*"})
            if t.config == retr_cfg and default:
                entry["default"] = True
            info = infos.setdefault(t.config, {"config_name": t.config, **_features_yaml(t.features), "splits": []})
            info["splits"].append({"name": t.split, "num_bytes": t.num_bytes, "num_examples": t.num_rows})
        meta = {
            "license": license,
            "task_categories": ["image-feature-extraction"],
            "size_categories": ["n<1K"],
            "tags": ["skyrank", "geo-localization"],
            "pretty_name": f"SkyRank test ({retriever} on {benchmark})",
            "configs": sorted(configs.values(), key=lambda c: not c.get("default", False)),
            "dataset_info": list(infos.values()),
        }
        card = join_front_matter(meta, f"\n# SkyRank test dataset\n\n{retriever} on {benchmark}.\n")
        params = {"benchmark": benchmark, "dataset": benchmark, "retriever": retriever, "with_images": with_images,
                  "m": 4, "top_m": 4, "splits": list(splits)}  # fmt: skip
        return writer.finalize(card, params)


def _features_yaml(features: Any) -> dict[str, Any]:
    from datasets import DatasetInfo

    return {"features": DatasetInfo(features=features)._to_yaml_dict()["features"]}
