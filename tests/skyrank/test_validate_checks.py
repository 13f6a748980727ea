"""Each named check of ``validate_dataset`` (issue 22), run alone, like a linter's rule: it passes a real build and
catches the one corruption it is there for. Every registered check has a case here (the registry drives the test)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from skyrank.errors import ValidationError
from skyrank.validate import CHECKS, validate_dataset
from skyrank.writer import MANIFEST_NAME
from tests.skyrank.benchmarks.layouts import make_university1652

RETR, GALLERY = "precomputed-university1652-d2s", "gallery-university1652"
EMB = "embeddings-precomputed-university1652"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skyrank.build import build_dataset

    tmp = tmp_path_factory.mktemp("checks")
    root = make_university1652(tmp / "University-Release", ("0001", "0002", "0003"), ("0100", "0101", "0102"),
                               ("0900",), views=2, size=16)  # fmt: skip
    ids = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".jpg", ".jpeg"))
    rng = np.random.default_rng(0)
    np.savez(tmp / "emb.npz", embeddings=rng.normal(size=(len(ids), 8)).astype(np.float32), ids=np.asarray(ids))
    return build_dataset(dataset="university1652", root=root, retriever="precomputed", checkpoint=tmp / "emb.npz",
                         top_m=3, out=tmp / "ds", with_images=True, embeddings=True, progress=False).out  # fmt: skip


def _rewrite(folder: Path, config: str, column: str, change: Callable[[list], None], split: str = "test") -> None:
    """Change one column of a table's Parquet file in place (its schema and metadata kept)."""
    path = next((folder / config).glob(f"{split}-*.parquet"))
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    change(values)
    i = table.schema.get_field_index(column)
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type)), path)


def _edit_card(folder: Path, edit: Callable[[dict], None]) -> None:
    readme = folder / "README.md"
    _, front, body = readme.read_text().split("---\n", 2)
    meta = yaml.safe_load(front)
    edit(meta)
    readme.write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body)


def _flip_a_byte(folder: Path) -> None:
    path = next((folder / RETR).glob("test-*.parquet"))
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))


def _manifest_m(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["m"] = 1
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


def _two_defaults(folder: Path) -> None:
    _edit_card(folder, lambda meta: [c.update(default=True) for c in meta["configs"][:2]])


def _ghost_config(folder: Path) -> None:
    _edit_card(folder, lambda meta: meta["configs"].append(
        {"config_name": "ghost", "data_files": [{"split": "test", "path": "ghost/test-*"}]}))  # fmt: skip


def _drop_a_row(folder: Path) -> None:
    path = next((folder / RETR).glob("test-*.parquet"))
    pq.write_table(pq.read_table(path).slice(1), path)


def _bad_image_bytes(folder: Path) -> None:
    _rewrite(folder, GALLERY, "image", lambda v: v[0].update(bytes=b"not an image"))


def _num_examples(folder: Path) -> None:
    def edit(meta: dict) -> None:
        info = next(i for i in meta["dataset_info"] if i["config_name"] == RETR)
        next(s for s in info["splits"] if s["name"] == "test")["num_examples"] = 999

    _edit_card(folder, edit)


def _illegal_view(folder: Path) -> None:
    _rewrite(folder, GALLERY, "view", lambda v: v.__setitem__(0, "street"))


def _not_unit(folder: Path) -> None:
    _rewrite(folder, EMB, "embedding", lambda v: v.__setitem__(0, [2 * x for x in v[0]]))


def _gt_among_candidates(folder: Path) -> None:
    path = next((folder / RETR).glob("test-*.parquet"))
    gt = pq.read_table(path).column("gt_id").to_pylist()
    _rewrite(folder, RETR, "candidate_ids", lambda v: v[0].__setitem__(0, gt[0]))


def _score_moved(folder: Path) -> None:
    _rewrite(folder, RETR, "candidate_scores", lambda v: v[0].__setitem__(-1, v[0][-1] - 0.01))


#: check name → (corruption, what its problem says)
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "checksums": (_flip_a_byte, "sha256"),
    "manifest": (_manifest_m, "'m' must be an integer >= 2"),
    "card-metadata": (_two_defaults, "default: true"),
    "card-files": (_ghost_config, "ghost/test: no Parquet file"),
    "schema": (_drop_a_row, "rows on disk, manifest says"),
    "embedded-images": (_bad_image_bytes, "do not decode"),
    "dataset-info": (_num_examples, "num_examples 999"),
    "image-tables": (_illegal_view, "view outside"),
    "embeddings": (_not_unit, "not L2-normalised"),
    "retriever-tables": (_gt_among_candidates, "ground truth among the candidates"),
    "recompute-from-embeddings": (_score_moved, "differ from the embeddings (Eq. 1)"),
    "load-dataset": (_num_examples, "load_dataset failed"),
}


def test_every_check_has_a_case():
    assert [c.name for c in CHECKS] == list(CASES)
    assert all(c.doc for c in CHECKS)


@pytest.mark.parametrize("name", list(CASES))
def test_each_check_alone_passes_a_build_and_catches_its_corruption(built, tmp_path, name):
    folder = tmp_path / "ds"
    shutil.copytree(built, folder)
    validate_dataset(folder, checks=[name])
    corrupt, expected = CASES[name]
    corrupt(folder)
    with pytest.raises(ValidationError) as err:
        validate_dataset(folder, checks=[name])
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_an_unknown_check_is_refused(built):
    with pytest.raises(ValueError, match="unknown validation check"):
        validate_dataset(built, checks=["nope"])
