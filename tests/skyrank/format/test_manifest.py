"""skyrank.format.manifest: one dataclass, one key for m, a format version; folders written before still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyrank.errors import ValidationError
from skyrank.format.manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest, read_manifest
from skyrank.validate import validate_dataset
from tests.skyrank.test_writer import M, make_tables, write_dataset


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    return write_dataset(tmp_path_factory.mktemp("ds") / "ds", make_tables(root))


def test_written_manifest_has_one_m_and_the_version(folder: Path) -> None:
    doc = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert doc["format_version"] == FORMAT_VERSION == 3 and doc["m"] == M and "top_m" not in doc
    manifest = read_manifest(folder)
    assert isinstance(manifest, Manifest) and manifest.m == M and manifest["m"] == M
    assert manifest.table(manifest.tables[0]["config"], manifest.tables[0]["split"]) == manifest.tables[0]
    assert manifest.m_for("sample4geo-u1652-d2s-m30") == 30 and manifest.m_for("sample4geo-u1652-d2s") == M


def _rewrite(folder: Path, target: Path, edit) -> Path:
    import shutil

    shutil.copytree(folder, target)
    doc = json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8"))
    edit(doc)
    (target / MANIFEST_NAME).write_text(json.dumps(doc), encoding="utf-8")
    return target


def test_a_format_1_manifest_still_reads_and_validates(folder: Path, tmp_path: Path) -> None:
    """Datasets written before issue 11: no format_version, m stored as both top_m and m (or top_m only)."""

    def to_v1(doc):
        del doc["format_version"]
        doc["top_m"] = doc["m"]

    old = _rewrite(folder, tmp_path / "v1", to_v1)
    manifest = read_manifest(old)
    assert (manifest.format_version, manifest.m) == (1, M) and "top_m" not in manifest.params
    assert validate_dataset(old, load=False).rows == validate_dataset(folder, load=False).rows

    def top_m_only(doc):
        del doc["format_version"]
        doc["top_m"] = doc.pop("m")

    assert read_manifest(_rewrite(folder, tmp_path / "top_m", top_m_only)).m == M


def test_a_newer_format_is_refused(folder: Path, tmp_path: Path) -> None:
    newer = _rewrite(folder, tmp_path / "v9", lambda doc: doc.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ValidationError, match="upgrade skyrank|reads up to"):
        read_manifest(newer)


def test_round_trip_keeps_the_build_parameters() -> None:
    doc = {"format_version": 2, "m": 20, "benchmark": "sues200", "files": {}, "tables": [{"config": "c"}]}
    manifest = Manifest.from_dict(doc)
    assert manifest.params == {"benchmark": "sues200"} and manifest.to_dict() == doc and dict(manifest) == doc
