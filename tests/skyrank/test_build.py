"""End-to-end ``build_dataset`` on a tiny generated benchmark: the folder loads elsewhere, is byte-identical on a
re-build, and an interrupted build leaves nothing that looks complete."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from skyrank.benchmarks.synthetic import generate_synthetic
from skyrank.build import build_dataset
from skyrank.errors import OutputExistsError, SkyRankError
from skyrank.format import schema
from skyrank.retrievers import create

SIZE = 32


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("build")
    root = generate_synthetic(work / "bench", locations=8, distractors=4, views=2, image_size=SIZE, progress=False)
    torch.manual_seed(0)
    retriever = create("sample4geo", arch="convnext_atto", image_size=SIZE, random_weights=True)
    ckpt = work / "atto.pth"
    torch.save(retriever.model.state_dict(), ckpt)
    return root, ckpt


def _build(bench: tuple[Path, Path], out: Path, **kw: object):
    root, ckpt = bench
    params = dict(
        dataset="synthetic", root=root, checkpoint=ckpt, arch="convnext_atto", image_size=SIZE, out=out,
        top_m=5, progress=False,
    )  # fmt: skip
    params.update(kw)
    return build_dataset(**params)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_build_writes_a_dataset_that_loads_in_a_fresh_process(bench, tmp_path):
    report = _build(bench, tmp_path / "ds")
    cfg = schema.retriever_config_name("sample4geo", "synthetic", "d2s")
    emb = schema.embeddings_config_name("sample4geo", "synthetic")  # on by default for the synthetic benchmark
    assert set(report.configs) == {cfg, "gallery-synthetic", "queries-synthetic", emb}
    assert report.configs[emb] == {"train": 24, "test": 28}  # one row per image: queries + gallery
    assert report.configs[cfg] == {"train": 16, "test": 16}  # 8 locations x 2 views per split
    assert report.configs["gallery-synthetic"] == {"train": 8, "test": 12}  # test: 8 + 4 distractors
    for s in report.stats:
        assert 0.0 <= s.metrics["R@1"] <= s.metrics["R@5"] <= s.metrics["R@10"] <= 100.0
    assert "R@1" in report.summary()

    script = textwrap.dedent(
        f"""
        import json, sys
        from datasets import load_dataset
        out = {{}}
        for name in ["{cfg}", "gallery-synthetic", "queries-synthetic"]:
            for split in ["train", "test"]:
                ds = load_dataset(sys.argv[1], name, split=split, cache_dir=sys.argv[2])
                out[name + "/" + split] = len(ds)
        ds = load_dataset(sys.argv[1], "{cfg}", split="test", cache_dir=sys.argv[2])
        row = ds[0]
        out["m_minus_1"] = len(row["candidate_ids"])
        g = load_dataset(sys.argv[1], "gallery-synthetic", split="test", cache_dir=sys.argv[2])
        out["image_size"] = list(g[0]["image"].size)
        out["skyrank_imported"] = "skyrank" in sys.modules
        print(json.dumps(out))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script, str(report.out), str(tmp_path / "cache")],
        capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got[f"{cfg}/test"] == 16 and got["gallery-synthetic/test"] == 12
    assert got["m_minus_1"] == 4
    assert got["image_size"] == [SIZE, SIZE]
    assert got["skyrank_imported"] is False


def test_identical_builds_are_byte_identical(bench, tmp_path):
    a = _build(bench, tmp_path / "a").out
    b = _build(bench, tmp_path / "b").out
    assert _tree_digest(a) == _tree_digest(b)


def test_existing_output_is_not_overwritten_without_flag(bench, tmp_path):
    out = tmp_path / "ds"
    _build(bench, out, splits=("test",))
    with pytest.raises(OutputExistsError):
        _build(bench, out, splits=("test",))
    _build(bench, out, splits=("test",), overwrite=True)


def test_killed_build_leaves_no_complete_folder_and_rerun_succeeds(bench, tmp_path):
    root, ckpt = bench
    out = tmp_path / "ds"
    # The child process writes the first table, then dies with SIGKILL: no cleanup handler runs.
    script = textwrap.dedent(
        f"""
        import os, signal
        from skyrank import writer
        from skyrank.build import build_dataset
        original = writer.DatasetWriter.add_table
        def add_table(self, *a, **k):
            info = original(self, *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        writer.DatasetWriter.add_table = add_table
        build_dataset(dataset="synthetic", root={str(root)!r}, checkpoint={str(ckpt)!r}, arch="convnext_atto",
                      image_size={SIZE}, out={str(out)!r}, top_m=5, progress=False)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == -9, res.stderr
    assert not out.exists()  # only the hidden staging folder may remain
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")]
    assert leftovers, "the staging folder should be left behind by a killed run"
    report = _build(bench, out)
    assert (report.out / "skyrank_manifest.json").is_file()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(directions=("x2y",)), "direction"),
        (dict(protocol="junk"), "protocol"),
        (dict(top_m=1), "top-m"),
        (dict(splits=("val",)), "splits"),
        (dict(altitude=150), "altitude"),
    ],
)
def test_bad_arguments_raise_clear_errors(bench, tmp_path, kw, match):
    with pytest.raises(SkyRankError, match=match):
        _build(bench, tmp_path / "ds", **kw)


def test_real_benchmark_without_checkpoint_says_how_to_get_one(tmp_path):
    from tests.skyrank.benchmarks.layouts import make_university1652

    make_university1652(tmp_path / "U", ["0001", "0002"], ["0003", "0004"], ["0005"])
    with pytest.raises(SkyRankError, match="--checkpoint"):
        build_dataset(dataset="university1652", root=tmp_path / "U", out=tmp_path / "ds", progress=False)


def test_a_new_retriever_declares_its_weights_and_opts_where_it_registers(bench, tmp_path, monkeypatch):
    """Adding a retriever is one module: the build's weight and --opts checks read what it declared when it
    registered (RetrieverInfo), not a list of names in build.py."""
    from skyrank.errors import MissingWeightsError, OptionError
    from skyrank.retrievers import _base, register_retriever, retriever_info

    monkeypatch.setattr(_base, "_RETRIEVERS", dict(_base._RETRIEVERS))
    monkeypatch.setattr(_base, "_INFO", dict(_base._INFO))
    seen = []
    register_retriever("toy-learned", weights_hint="toy weights: toy.pth", read_opts=seen.append)(
        lambda checkpoint=None, device="cpu": create(
            "sample4geo", arch="convnext_atto", image_size=SIZE, random_weights=True
        )
    )
    register_retriever("toy-lookup", learned_weights=False, checkpoint_required=True, checkpoint_what="a table")(
        lambda checkpoint=None, device="cpu": None
    )
    assert retriever_info("toy-learned").learned_weights and retriever_info("sample4geo").read_opts is None
    root, _ = bench
    common = dict(dataset="synthetic", root=root, out=tmp_path / "ds", top_m=5, progress=False)
    with pytest.raises(MissingWeightsError, match="toy weights: toy.pth"):
        build_dataset(retriever="toy-learned", **common)
    with pytest.raises(OptionError, match="needs --checkpoint: a table"):
        build_dataset(retriever="toy-lookup", **common)
    with pytest.raises(OptionError, match="takes none"):
        build_dataset(retriever="toy-lookup", opts=tmp_path / "opts.yaml", checkpoint=bench[1], **common)
    opts = tmp_path / "opts.yaml"
    opts.write_text("x: 1\n")
    with pytest.raises(MissingWeightsError):  # its own opts reader ran first, then the weights were refused
        build_dataset(retriever="toy-learned", opts=opts, **common)
    assert seen == [opts]


def test_two_process_build_equals_one_process(bench, tmp_path):
    one = _build(bench, tmp_path / "one", splits=("test",)).out
    two = _build(bench, tmp_path / "two", splits=("test",), num_processes=2).out
    parquet = {k: v for k, v in _tree_digest(one).items() if k.endswith(".parquet")}
    assert parquet and parquet == {k: v for k, v in _tree_digest(two).items() if k.endswith(".parquet")}


def test_bad_image_stops_the_build_unless_skipped_then_it_is_listed(bench, tmp_path):
    import shutil

    from skyrank.errors import BadImageError

    root, ckpt = bench
    copy = tmp_path / "bench"
    shutil.copytree(root, copy)
    bad = sorted((copy / "test" / "query_drone").rglob("*.jpeg"))[0]
    bad.write_bytes(b"not a jpeg")
    rel = bad.relative_to(copy).as_posix()
    with pytest.raises(BadImageError) as err:
        _build((copy, ckpt), tmp_path / "ds", splits=("test",))
    assert rel in str(err.value) and "--skip-bad-images" in (err.value.hint or "")  # the fix, given once
    assert not (tmp_path / "ds").exists()

    report = _build((copy, ckpt), tmp_path / "ds", splits=("test",), skip_bad_images=True)
    assert report.bad_images == [rel]
    assert report.configs["queries-synthetic"]["test"] == 15
    assert rel in report.summary() and rel in (report.out / "README.md").read_text()


@pytest.mark.parametrize("layout", ["raw", "split"])
def test_sues200_build_per_altitude_ids_only(bench, tmp_path, layout):
    from tests.skyrank.benchmarks.layouts import make_sues200

    _, ckpt = bench
    root = make_sues200(tmp_path / "SUES", layout=layout, size=SIZE)
    report = build_dataset(
        dataset="sues200", root=root, altitude=150, directions=("d2s", "s2d"), checkpoint=ckpt,
        arch="convnext_atto", image_size=SIZE, out=tmp_path / "ds", top_m=3, progress=False,
    )  # fmt: skip
    d2s, s2d = "sample4geo-sues200-150-d2s", "sample4geo-sues200-150-s2d"
    assert report.configs[d2s] == {"train": 6, "test": 4}  # 3 train / 2 test locations x 2 frames
    assert report.configs[s2d] == {"train": 3, "test": 2}
    # the official SUES-200 test gallery holds every location: train locations act as distractors
    assert {s.split: s.gallery for s in report.stats if s.config == d2s} == {"train": 3, "test": 5}
    assert report.params["with_images"] is False  # the SUES-200 licence forbids redistribution
    assert "dtype: image" not in (report.out / "README.md").read_text()


@pytest.mark.parametrize(("kind", "recall", "warned"), [("ivf", 0.9986, False), ("hnsw", 0.9218, True)])
def test_summary_reports_the_search_index_and_warns_on_low_recall(kind: str, recall: float, warned: bool) -> None:
    from skyrank.build import BuildReport

    index = {"kind": kind, "recall_at_m": recall, "recall_k": 20, "recall_queries": 1000,
             **({"nlist": 4000, "nprobe": 4} if kind == "ivf" else {"M": 32, "ef_search": 2048})}
    params = {"protocol": "official", "m": 20, "search_index": index}
    text = BuildReport(Path("out"), {}, [], {"total": 1.0}, [], params).summary()
    assert f"search index: {kind}" in text and f"recall@20 against exact search {recall:.4f}" in text
    assert ("warning: that recall is below 0.99" in text) is warned
    exact = BuildReport(Path("out"), {}, [], {"total": 1.0}, [], {**params, "search_index": {"kind": "exact"}})
    assert "search index" not in exact.summary()


def test_synthetic_retriever_recipes_have_their_own_cache_folders(tmp_path):
    from skyrank.build import SYNTHETIC_RETRIEVER, synthetic_retriever_checkpoint, synthetic_retriever_dir

    root = tmp_path / "bench"
    default = synthetic_retriever_dir(root)
    assert default == synthetic_retriever_dir(root, dict(SYNTHETIC_RETRIEVER))  # the default's key is unchanged
    shorter = synthetic_retriever_dir(root, {**SYNTHETIC_RETRIEVER, "epochs": 10})
    assert shorter != default and shorter.parent == default.parent
    with pytest.raises(ValueError, match="unknown synthetic retriever recipe key"):
        synthetic_retriever_checkpoint(root, recipe={"epoch": 10})
    # a cached checkpoint is returned without training
    shorter.mkdir(parents=True)
    (shorter / "weights_end.pth").write_bytes(b"x")
    assert synthetic_retriever_checkpoint(root, recipe={"epochs": 10}) == shorter / "weights_end.pth"
