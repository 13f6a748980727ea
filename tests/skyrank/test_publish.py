"""``skyrank.publish``: local validation, licence guard, plan, and the upload path against a fake Hub.

The fake Hub (``fake_hub.py``) runs on 127.0.0.1 and the REAL ``huggingface_hub`` client code talks to it (Xet is
switched off so the client uses the plain HTTP/LFS protocol). No test reaches the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from skyrank.errors import PublishError
from skyrank.loading import join_front_matter, split_front_matter
from skyrank.publish import publish_dataset
from skyrank.writer import sha256_of
from tests.skyrank.fake_hub import FakeHub, make_dataset_folder, make_images

TOKEN = "hf_testWRITEtoken_5f3a9c"
READ_TOKEN = "hf_testREADtoken_77b1d0"
REPO = "alice/skyrank"


@pytest.fixture(autouse=True)
def _no_xet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("data")
    images = make_images(base / "images")
    return {
        "images": images,
        "synthetic": make_dataset_folder(base / "synthetic", images, with_images=True),
        "other": make_dataset_folder(base / "other", images, retriever="other", with_images=True),
        "u1652_images": make_dataset_folder(base / "u1652i", images, benchmark="university1652", with_images=True),
        "u1652_ids": make_dataset_folder(base / "u1652", images, benchmark="university1652"),
    }


@pytest.fixture()
def hub() -> FakeHub:
    with FakeHub(tokens={TOKEN: "write", READ_TOKEN: "read"}) as server:
        yield server


def _publish(folder: Path, hub: FakeHub, **kw: object):
    kw.setdefault("token", TOKEN)
    kw.setdefault("progress", False)
    return publish_dataset(folder, kw.pop("repo_id", REPO), endpoint=hub.endpoint, **kw)


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.parquet")}


def _rows(folder: Path, config: str, split: str = "test") -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted((folder / config).glob(f"{split}-*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


# ------------------------------------------------------------------------------------------------ folder round trip
def test_every_config_loads_in_a_fresh_process_without_skyrank(data: dict[str, Path], tmp_path: Path) -> None:
    folder = data["synthetic"]
    script = textwrap.dedent(
        f"""
        import json, sys
        import datasets
        out = {{}}
        for name in datasets.get_dataset_config_names({str(folder)!r}):
            for split in datasets.get_dataset_split_names({str(folder)!r}, name):
                ds = datasets.load_dataset({str(folder)!r}, name, split=split, cache_dir={str(tmp_path)!r})
                out[name + "/" + split] = [len(ds), sorted(ds.features)]
                if "image" in ds.features:
                    assert ds[0]["image"].size[0] > 0
        assert "skyrank" not in sys.modules
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = json.loads(res.stdout.strip().splitlines()[-1])
    assert loaded == {
        "gallery-synthetic/test": [4, ["image", "image_id", "label", "path", "view"]],
        "queries-synthetic/test": [8, ["image", "image_id", "label", "path", "view"]],
        "tiny-synthetic-d2s/test": [8, sorted(_rows(folder, "tiny-synthetic-d2s")[0])],
    }


# ------------------------------------------------------------------------------------------------ publish / re-publish
def test_publish_then_republish_changes_nothing(data: dict[str, Path], hub: FakeHub) -> None:
    folder = data["synthetic"]
    report = _publish(folder, hub, tag="v1.0")
    assert report.uploaded and not report.remote_exists
    assert set(report.by_status("new")) == {"README.md", "skyrank_manifest.json", *_local_files(folder)}
    remote = hub.files(REPO)
    assert {k: v for k, v in remote.items() if k.endswith(".parquet")} == _local_files(folder)
    assert remote["README.md"] == (folder / "README.md").read_bytes()  # nothing to merge with: ours as is
    commits = hub.commits(REPO)
    assert len(commits) == 2  # the repo's initial commit + exactly ONE upload commit
    assert hub.repo(REPO).refs["v1.0"] == commits[0].oid

    hub.clear_requests()
    again = _publish(folder, hub, tag="v1.0")
    assert not again.uploaded and not again.changes
    assert set(again.by_status("unchanged")) == set(remote) - {".gitattributes"}
    assert len(hub.commits(REPO)) == 2
    assert not [r for r in hub.write_requests() if "/commit/" in r[1] or "/preupload/" in r[1]]


def test_add_config_merges_the_readme_and_both_load(data: dict[str, Path], hub: FakeHub, tmp_path: Path) -> None:
    _publish(data["synthetic"], hub)
    report = _publish(data["other"], hub)
    assert report.uploaded
    # gallery/queries configs are identical in both folders: unchanged; only the new retriever config is new.
    assert set(report.by_status("new")) == {"other-synthetic-d2s/test-00000-of-00001.parquet"}
    meta, _ = split_front_matter(hub.files(REPO)["README.md"].decode())
    names = [c["config_name"] for c in meta["configs"]]
    assert sorted(names) == ["gallery-synthetic", "other-synthetic-d2s", "queries-synthetic", "tiny-synthetic-d2s"]
    defaults = [c["config_name"] for c in meta["configs"] if c.get("default")]
    assert defaults == ["tiny-synthetic-d2s"]  # the remote default is kept
    assert sorted(i["config_name"] for i in meta["dataset_info"]) == sorted(names)
    manifest = json.loads(hub.files(REPO)["skyrank_manifest.json"])
    assert {t["config"] for t in manifest["tables"]} == set(names)
    assert "tiny-synthetic-d2s/test-00000-of-00001.parquet" in manifest["files"]
    # the user's folder is never modified
    assert "other-synthetic-d2s" in (data["other"] / "README.md").read_text()
    assert "tiny-synthetic-d2s" not in (data["other"] / "README.md").read_text()

    import datasets
    from huggingface_hub import snapshot_download

    snap = snapshot_download(REPO, repo_type="dataset", endpoint=hub.endpoint, cache_dir=str(tmp_path / "hf"))
    for cfg, folder in (("tiny-synthetic-d2s", data["synthetic"]), ("other-synthetic-d2s", data["other"])):
        ds = datasets.load_dataset(snap, cfg, split="test", cache_dir=str(tmp_path / "cache"))
        assert ds.to_list() == _rows(folder, cfg)


def test_republishing_a_config_deletes_its_stale_shards(data: dict[str, Path], hub: FakeHub, tmp_path: Path) -> None:
    _publish(data["synthetic"], hub)
    folder = tmp_path / "changed"
    shutil.copytree(data["synthetic"], folder)
    # simulate a re-build that sharded differently: the old shard name must disappear from the remote
    import pyarrow.parquet as pq

    old = folder / "tiny-synthetic-d2s" / "test-00000-of-00001.parquet"
    table = pq.read_table(old)
    old.unlink()
    pq.write_table(table.slice(0, 4), folder / "tiny-synthetic-d2s" / "test-00000-of-00002.parquet")
    pq.write_table(table.slice(4), folder / "tiny-synthetic-d2s" / "test-00001-of-00002.parquet")
    manifest = json.loads((folder / "skyrank_manifest.json").read_text())
    new_files = ["tiny-synthetic-d2s/test-00000-of-00002.parquet", "tiny-synthetic-d2s/test-00001-of-00002.parquet"]
    del manifest["files"]["tiny-synthetic-d2s/test-00000-of-00001.parquet"]
    for rel in new_files:
        manifest["files"][rel] = {"sha256": sha256_of(folder / rel), "bytes": (folder / rel).stat().st_size}
    for table in manifest["tables"]:
        if table["config"] == "tiny-synthetic-d2s":
            table["files"] = new_files
    (folder / "skyrank_manifest.json").write_text(json.dumps(manifest))
    report = _publish(folder, hub)
    assert report.by_status("deleted") == ["tiny-synthetic-d2s/test-00000-of-00001.parquet"]
    remote = hub.files(REPO)
    assert sorted(p for p in remote if p.startswith("tiny-synthetic-d2s/")) == [
        "tiny-synthetic-d2s/test-00000-of-00002.parquet",
        "tiny-synthetic-d2s/test-00001-of-00002.parquet",
    ]
    assert "gallery-synthetic/test-00000-of-00001.parquet" in remote


# ------------------------------------------------------------------------------------------------ dry run
def test_dry_run_makes_no_write_request(data: dict[str, Path], hub: FakeHub, capsys: pytest.CaptureFixture) -> None:
    report = _publish(data["synthetic"], hub, dry_run=True, progress=True)
    assert report.dry_run and not report.uploaded and not report.remote_exists
    assert hub.write_requests() == [] and hub.repos == {}
    out = capsys.readouterr().out
    assert "tiny-synthetic-d2s" in out and "8 rows" in out and "new" in out and "dry run" in out

    _publish(data["synthetic"], hub)
    hub.clear_requests()
    report = _publish(data["other"], hub, dry_run=True, gated=True, tag="v2")
    assert report.by_status("new") == ["other-synthetic-d2s/test-00000-of-00001.parquet"]
    assert "README.md" in report.by_status("changed")
    assert hub.requests and hub.write_requests() == []
    assert len(hub.commits(REPO)) == 2


# ------------------------------------------------------------------------------------------------ refusals
def test_licence_guard(data: dict[str, Path], hub: FakeHub) -> None:
    with pytest.raises(PublishError, match="University-1652") as err:
        _publish(data["u1652_images"], hub)
    assert "gallery-university1652" in str(err.value) and "public" in str(err.value)
    assert hub.requests == []  # refused before any request
    with pytest.raises(PublishError, match="acknowledge"):
        _publish(data["u1652_images"], hub, private=True)
    # ids-only configs publish freely to a public repo
    assert _publish(data["u1652_ids"], hub, repo_id="alice/u1652-ids").uploaded
    # the images may go to a private repo with the explicit acknowledgement
    report = _publish(data["u1652_images"], hub, repo_id="alice/u1652-private", private=True, acknowledge_license=True)
    assert report.uploaded and hub.repo("alice/u1652-private").private
    # ... but not to an existing public repo, even if --private is passed (create_repo ignores it for existing repos)
    with pytest.raises(PublishError, match="already exists and is public"):
        _publish(data["u1652_images"], hub, repo_id="alice/u1652-ids", private=True, acknowledge_license=True)
    # gated is fine too
    report = _publish(data["u1652_images"], hub, repo_id="alice/u1652-gated", gated=True, acknowledge_license=True)
    assert report.uploaded and hub.repo("alice/u1652-gated").gated == "manual"


def test_licence_guard_reads_the_benchmark_class(data: dict[str, Path], hub: FakeHub, monkeypatch) -> None:
    """No hard-coded list: the guard follows ``Benchmark.redistributable`` (issue 11)."""
    from skyrank.benchmarks import get_benchmark, restricted_benchmark

    assert restricted_benchmark("university1652") == "University-1652"
    assert restricted_benchmark("sues200") == "SUES-200"
    assert restricted_benchmark("synthetic") is None and restricted_benchmark("not-registered") is None
    monkeypatch.setattr(type(get_benchmark("university1652")), "redistributable", True)
    assert _publish(data["u1652_images"], hub, repo_id="alice/u1652-open").uploaded


def test_publish_checks_the_folder_once(data: dict[str, Path], hub: FakeHub, monkeypatch) -> None:
    """One check of the folder: validate_dataset, not a second set of checks in the publisher (issue 11)."""
    import skyrank.validate

    real, calls = skyrank.validate.validate_dataset, []
    monkeypatch.setattr(skyrank.validate, "validate_dataset", lambda *a, **k: calls.append(1) or real(*a, **k))
    report = _publish(data["synthetic"], hub, dry_run=True)
    assert calls == [1] and report.dry_run


def test_invalid_metadata_is_refused_with_every_problem(data: dict[str, Path], hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(data["synthetic"], folder)
    meta, body = split_front_matter((folder / "README.md").read_text())
    meta["license"] = "not-a-licence"
    meta["size_categories"] = ["tiny"]
    meta["configs"][0]["data_files"][0]["split"] = "test-split"
    meta["configs"][1]["default"] = True
    (folder / "README.md").write_text(join_front_matter(meta, body))
    with pytest.raises(PublishError) as err:
        _publish(folder, hub)
    text = str(err.value)
    assert "not-a-licence" in text and "'tiny'" in text and "'test-split'" in text and "default" in text
    assert hub.requests == []


def test_unreadable_parquet_and_row_mismatch_are_reported(data: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(data["synthetic"], folder)
    (folder / "gallery-synthetic" / "test-00000-of-00001.parquet").write_bytes(b"not parquet")
    meta, body = split_front_matter((folder / "README.md").read_text())
    meta["dataset_info"][-1]["splits"][0]["num_examples"] = 99
    (folder / "README.md").write_text(join_front_matter(meta, body))
    with pytest.raises(PublishError) as err:
        publish_dataset(folder, REPO, dry_run=True, endpoint="http://127.0.0.1:9", progress=False)
    assert "gallery-synthetic/test-00000-of-00001.parquet" in str(err.value)
    assert "99 rows" in str(err.value)


# ------------------------------------------------------------------------------------------------ failures
def test_server_error_mid_upload_then_successful_rerun(data: dict[str, Path], hub: FakeHub, tmp_path: Path) -> None:
    folder = data["synthetic"]
    hub.fail_next("commit", 500)
    with pytest.raises(PublishError, match="answered 500.*re-run"):
        _publish(folder, hub)
    assert len(hub.commits(REPO)) == 1  # only the initial commit: nothing partial
    uploaded_before = len(hub.lfs_objects)
    assert uploaded_before == len(_local_files(folder))  # LFS blobs went up before the commit failed
    hub.clear_requests()
    report = _publish(folder, hub)
    assert report.uploaded and len(hub.commits(REPO)) == 2
    assert not [r for r in hub.requests if r[1].startswith("/_lfs/")]  # blobs were not uploaded twice

    from huggingface_hub import snapshot_download

    snap = Path(snapshot_download(REPO, repo_type="dataset", endpoint=hub.endpoint, cache_dir=str(tmp_path / "hf")))
    assert _local_files(snap) == _local_files(folder)
    for cfg in ("tiny-synthetic-d2s", "gallery-synthetic", "queries-synthetic"):
        assert _rows(snap, cfg) == _rows(folder, cfg)


def test_token_is_never_printed(data: dict[str, Path], hub: FakeHub, capsys: pytest.CaptureFixture,
                                caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    bad = "hf_WRONGtoken_0123456789"
    with pytest.raises(PublishError) as err:
        _publish(data["synthetic"], hub, token=bad, progress=True)
    assert "token invalid: set HF_TOKEN or pass --token" in str(err.value)
    with pytest.raises(PublishError) as err2:
        _publish(data["synthetic"], hub, token=READ_TOKEN, progress=True)
    assert "no write access" in str(err2.value)
    report = _publish(data["synthetic"], hub, progress=True)
    assert report.uploaded
    captured = capsys.readouterr()
    seen = captured.out + captured.err + caplog.text + str(err.value) + str(err2.value) + repr(report)
    for secret in (bad, READ_TOKEN, TOKEN):
        assert secret not in seen


def test_token_from_environment(data: dict[str, Path], hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert publish_dataset(data["synthetic"], REPO, endpoint=hub.endpoint, progress=False).uploaded


def test_unreachable_endpoint(data: dict[str, Path]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.raises(PublishError, match=f"could not reach {endpoint}"):
        publish_dataset(data["synthetic"], REPO, token=TOKEN, endpoint=endpoint, progress=False)


def test_missing_revision_and_pull_request(data: dict[str, Path], hub: FakeHub) -> None:
    _publish(data["synthetic"], hub)
    main_before = hub.repo(REPO).refs["main"]
    report = _publish(data["other"], hub, create_pr=True)
    assert report.pr_url and report.pr_url.endswith("/discussions/1")
    assert hub.repo(REPO).refs["main"] == main_before
    assert "other-synthetic-d2s/test-00000-of-00001.parquet" in hub.files(REPO, "refs/pr/1")
    report = _publish(data["other"], hub, revision="dev")
    assert report.uploaded and "other-synthetic-d2s/test-00000-of-00001.parquet" in hub.files(REPO, "dev")
    assert hub.repo(REPO).refs["main"] == main_before


# ------------------------------------------------------------------------------------------------ load from the hub
def test_load_dataset_from_the_fake_hub_in_a_fresh_process(
    data: dict[str, Path], hub: FakeHub, tmp_path: Path
) -> None:
    folder = data["synthetic"]
    _publish(folder, hub)
    script = textwrap.dedent(
        f"""
        import json
        import datasets
        out = {{}}
        for name in ("tiny-synthetic-d2s", "gallery-synthetic"):
            ds = datasets.load_dataset({REPO!r}, name, split="test", cache_dir={str(tmp_path / "cache")!r})
            out[name] = ds.remove_columns([c for c in ds.column_names if c == "image"]).to_list()
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "home"),
           "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_DATASETS_OFFLINE", None)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["tiny-synthetic-d2s"] == json.loads(json.dumps(_rows(folder, "tiny-synthetic-d2s")))
    want = [r["image_id"] for r in _rows(folder, "gallery-synthetic")]
    assert [r["image_id"] for r in out["gallery-synthetic"]] == want
