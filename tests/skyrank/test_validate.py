"""Tests of skyrank.validate: a valid folder passes; each broken invariant, corrupted one at a time, is listed."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from skyrank.errors import ValidationError
from skyrank.validate import validate_dataset
from skyrank.writer import MANIFEST_NAME
from tests.skyrank.test_writer import GALLERY, QUERIES, RETR, M, build_params, make_tables, write_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bench")
    return root, make_tables(root)


def _problems(folder: Path, **kwargs) -> list[str]:
    with pytest.raises(ValidationError) as err:
        validate_dataset(folder, **kwargs)
    assert err.value.problems
    assert all(p in str(err.value) for p in err.value.problems)
    return err.value.problems


def _rows(tables, cfg=RETR, split="test"):
    return tables[(cfg, split)]


def _first(rows, pred):
    return next(r for r in rows if pred(r))


def test_valid_folder_passes_with_load_round_trip(toy, tmp_path):
    root, tables = toy
    out = write_dataset(tmp_path / "ds", tables, images_root=root)
    report = validate_dataset(out)
    assert report.default_config == RETR
    assert report.configs[0] == RETR and set(report.configs) == {RETR, GALLERY, QUERIES}
    assert report.rows == {key: len(rows) for key, rows in sorted(tables.items())}
    assert report.splits[GALLERY] == ["train", "test"]
    assert report.problems == []
    # ids-only builds are valid too
    assert validate_dataset(write_dataset(tmp_path / "ids", tables), load=False).rows == report.rows


# -- one corruption of the rows at a time -------------------------------------------------------------------------


def _drop_last_candidate(t):
    r = _rows(t)[0]
    for k in ("candidate_ids", "candidate_scores", "candidate_gt_similarity"):
        r[k] = r[k][:-1]


def _gt_among_candidates(t):
    r = _rows(t)[0]
    r["candidate_ids"][-1] = r["gt_id"]


def _positive_among_candidates(t):
    r = _first(_rows(t), lambda r: len(r["positive_ids"]) > 1)
    r["candidate_ids"][-1] = r["positive_ids"][1]


def _candidate_outside_gallery(t):
    _rows(t)[0]["candidate_ids"][-1] = "test/satellite/9999/nope.jpg"


def _candidate_scores_increase(t):
    r = _rows(t)[0]
    r["candidate_scores"] = sorted(r["candidate_scores"])


def _retrieved_scores_increase(t):
    r = _rows(t)[0]
    r["retrieved_scores"] = sorted(r["retrieved_scores"])


def _similarity_out_of_range(t):
    _rows(t)[0]["candidate_gt_similarity"][0] = 1.5


def _gt_rank_not_min(t):
    r = _first(_rows(t), lambda r: len(r["positive_ids"]) > 1)
    r["gt_rank"] = r["positive_ranks"][1]


def _gt_rank_vs_retrieved(t):
    r = _first(_rows(t), lambda r: r["gt_rank"] <= M)
    r["gt_rank"] = r["positive_ranks"][0] = M + 3


def _positive_ranks_unsorted(t):
    r = _first(_rows(t), lambda r: len(r["positive_ids"]) > 1)
    r["positive_ranks"] = list(reversed(r["positive_ranks"]))


def _rank_inconsistent_with_scores(t):
    r = _first(_rows(t), lambda r: r["gt_rank"] == 1)
    r["gt_score"] = -0.99


def _swap_rule_broken(t):
    r = _rows(t)[0]
    r["candidate_ids"][0], r["candidate_ids"][1] = r["candidate_ids"][1], r["candidate_ids"][0]


def _candidate_with_query_label(t):
    r = _first(_rows(t), lambda r: len(r["positive_ids"]) == 1)
    gallery = _rows(t, GALLERY)
    # relabel the gallery image of the first candidate to the query's label: a missed positive
    target = r["candidate_ids"][0]
    _first(gallery, lambda g: g["image_id"] == target)["label"] = r["label"]


def _query_unknown(t):
    _rows(t, QUERIES).pop(0)


def _duplicate_image_id(t):
    g = _rows(t, GALLERY)
    g.append(dict(g[0]))


def _illegal_view(t):
    _rows(t, GALLERY)[0]["view"] = "street"


def _null_value(t):
    _rows(t)[0]["gt_id"] = None


CORRUPTIONS: dict[str, tuple[Callable, str]] = {
    "candidate count": (_drop_last_candidate, "len(candidate_ids) != m-1"),
    "gt among candidates": (_gt_among_candidates, "ground truth among the candidates"),
    "positive among candidates": (_positive_among_candidates, "a positive among the candidates"),
    "candidate outside gallery": (_candidate_outside_gallery, "absent from the gallery config"),
    "candidate scores increase": (_candidate_scores_increase, "candidate_scores that increase"),
    "retrieved scores increase": (_retrieved_scores_increase, "retrieved_scores that increase"),
    "similarity out of range": (_similarity_out_of_range, "outside [-1, 1]"),
    "gt_rank not min": (_gt_rank_not_min, "gt_rank != min(positive_ranks)"),
    "gt_rank vs retrieved": (_gt_rank_vs_retrieved, "gt_rank <= m not matching"),
    "positive ranks unsorted": (_positive_ranks_unsorted, "positive_ranks not strictly increasing"),
    "rank vs scores": (_rank_inconsistent_with_scores, "inconsistent with the scores"),
    "swap rule": (_swap_rule_broken, "break the swap rule"),
    "missed positive": (_candidate_with_query_label, "a candidate with the query's label"),
    "query unknown": (_query_unknown, "absent from the queries config"),
    "duplicate image id": (_duplicate_image_id, "repeat an image_id"),
    "illegal view": (_illegal_view, "view outside"),
    "null value": (_null_value, "null values"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_broken_invariant_is_listed(toy, tmp_path, name):
    root, tables = toy
    corrupt, expected = CORRUPTIONS[name]
    broken = copy.deepcopy(tables)
    corrupt(broken)
    out = write_dataset(tmp_path / "ds", broken)
    problems = _problems(out, load=False)
    assert any(expected in p for p in problems), problems
    assert any("/test:" in p for p in problems)  # names the table


def test_many_problems_are_all_collected(toy, tmp_path):
    _, tables = toy
    broken = copy.deepcopy(tables)
    _gt_among_candidates(broken)
    _illegal_view(broken)
    _similarity_out_of_range(broken)
    problems = _problems(write_dataset(tmp_path / "ds", broken), load=False)
    for expected in ("ground truth among the candidates", "view outside", "outside [-1, 1]"):
        assert any(expected in p for p in problems), problems


def test_wrong_m_in_manifest(toy, tmp_path):
    _, tables = toy
    out = write_dataset(tmp_path / "ds", tables, params=build_params(False, m=M + 1))
    assert any("len(candidate_ids) != m-1" in p for p in _problems(out, load=False))


def test_image_that_does_not_decode(toy, tmp_path):
    root, tables = toy
    bad_root = tmp_path / "bench"
    shutil.copytree(root, bad_root)
    victim = bad_root / _rows(tables, GALLERY)[0]["path"]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated JPEG
    out = write_dataset(tmp_path / "ds", tables, images_root=bad_root)
    problems = _problems(out, load=False)
    assert any("do not decode" in p for p in problems), problems
    validate_dataset(out, check_images=False, load=False)  # the decode check is what catches it


# -- folder-level corruptions -------------------------------------------------------------------------------------


@pytest.fixture
def folder(toy, tmp_path) -> Path:
    _, tables = toy
    return write_dataset(tmp_path / "ds", tables)


def _edit_yaml(folder: Path, edit: Callable[[dict], None]) -> None:
    readme = folder / "README.md"
    _, front, body = readme.read_text().split("---\n", 2)
    meta = yaml.safe_load(front)
    edit(meta)
    readme.write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body)


def test_missing_manifest_is_an_incomplete_build(folder):
    (folder / MANIFEST_NAME).unlink()
    assert any("incomplete build" in p for p in _problems(folder))


def test_checksum_mismatch(folder):
    victim = folder / RETR / "test-00000-of-00001.parquet"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert any("sha256" in p for p in _problems(folder, load=False))


def test_unlisted_parquet_file(folder):
    (folder / RETR / "extra.parquet").write_bytes(b"PAR1")
    assert any("not listed" in p for p in _problems(folder, load=False))


def test_yaml_that_does_not_parse(folder):
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace("configs:\n", "configs: [\n", 1))
    assert any("YAML" in p for p in _problems(folder, load=False))


def test_num_examples_mismatch_is_listed_also_by_load_dataset(folder):
    def edit(meta):
        meta["dataset_info"][0]["splits"][1]["num_examples"] = 999

    _edit_yaml(folder, edit)
    problems = _problems(folder)
    assert any("num_examples 999" in p for p in problems), problems
    assert any("load_dataset failed" in p and f"{RETR}/test" in p for p in problems), problems


def test_two_default_configs(folder):
    _edit_yaml(folder, lambda meta: meta["configs"][1].update(default=True))
    assert any("default: true" in p for p in _problems(folder, load=False))


def test_illegal_split_name(folder):
    _edit_yaml(folder, lambda meta: meta["configs"][1]["data_files"][0].update(split="train-x"))
    assert any("split name 'train-x'" in p for p in _problems(folder, load=False))


def test_config_without_files(folder):
    def edit(meta):
        meta["configs"].append({"config_name": "ghost", "data_files": [{"split": "test", "path": "ghost/test-*"}]})

    _edit_yaml(folder, edit)
    problems = _problems(folder, load=False)
    assert any("ghost/test: no Parquet file" in p for p in problems), problems


def test_error_message_is_capped(toy, tmp_path, monkeypatch):
    import skyrank.validate as v

    monkeypatch.setattr(v, "MAX_PROBLEMS", 2)
    _, tables = toy
    broken = copy.deepcopy(tables)
    _gt_among_candidates(broken)
    _illegal_view(broken)
    _similarity_out_of_range(broken)
    problems = _problems(write_dataset(tmp_path / "ds", broken), load=False)
    assert len(problems) == 3 and problems[-1].startswith("... and ")


def test_manifest_is_json(folder):
    assert json.loads((folder / MANIFEST_NAME).read_text())["m"] == M
