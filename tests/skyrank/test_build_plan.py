"""The build plan (issue 22): made from the options and the folder listing only, it counts exactly what the build
then writes, encodes each image once, and ``skyrank build --dry-run`` prints it and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from skyrank.build_plan import BuildOptions, plan_build
from skyrank.errors import OptionError
from tests.skyrank.benchmarks.layouts import make_university1652, make_university1652_placeholders

TRAIN, TEST, DISTRACTORS = ("0001", "0002", "0003"), ("0100", "0101"), ("0900",)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("plan")
    root = make_university1652(tmp / "University-Release", TRAIN, TEST, DISTRACTORS, views=3, size=16)
    ids = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".jpg", ".jpeg"))
    rng = np.random.default_rng(0)
    np.savez(tmp / "emb.npz", embeddings=rng.normal(size=(len(ids), 8)).astype(np.float32), ids=np.asarray(ids))
    return {"root": root, "emb": tmp / "emb.npz", "tmp": tmp}


def _options(tree: dict[str, Path], out: Path, **kw: object) -> dict[str, object]:
    return dict(dataset="university1652", root=tree["root"], retriever="precomputed", checkpoint=tree["emb"],
                top_m=3, directions=("d2s", "s2d"), out=out, progress=False, **kw)  # fmt: skip


def test_the_plan_counts_exactly_what_the_build_writes(tree, tmp_path):
    from skyrank.build import build_dataset

    plan = plan_build(**_options(tree, tmp_path / "ds", embeddings=True))
    assert not (tmp_path / "ds").exists()
    report = build_dataset(**_options(tree, tmp_path / "ds", embeddings=True))
    assert {(c.config, c.split): c.rows for c in plan.configs} == {
        (cfg, split): n for cfg, splits in report.configs.items() for split, n in splits.items()
    }
    assert plan.embed_dim == 8 and all(c.bytes > 0 for c in plan.configs)
    # University-1652's train split: both directions use every train image; each is encoded once.
    train_images = len(TRAIN) * 3 + len(TRAIN)
    assert sum(e.images for e in plan.encode if e.split == "train") == train_images
    assert plan.encodes_per_direction - plan.images_to_encode == train_images
    assert report.configs["embeddings-precomputed-university1652"]["train"] == train_images


def test_pairs_hold_counts_and_positives_per_direction(tree, tmp_path):
    plan = plan_build(**_options(tree, tmp_path / "ds"))
    pairs = {(p.split, p.direction): (p.queries, p.gallery, p.max_positives) for p in plan.pairs}
    g = len(TEST) + len(DISTRACTORS)
    assert pairs[("test", "d2s")] == (len(TEST) * 3, g, 1)
    assert pairs[("test", "s2d")] == (len(TEST), g * 3, 3)
    assert pairs[("train", "s2d")] == (len(TRAIN), len(TRAIN) * 3, 3)
    assert plan.checks[:3] == ["options", "--checkpoint exists", "--root exists"]
    assert "benchmark layout" in plan.checks and "--top-m fits every gallery" in plan.checks
    assert plan.weights == f"--checkpoint {tree['emb']}"


def test_plan_on_placeholder_files_decodes_nothing(tmp_path, monkeypatch):
    """Empty image files: any decode would fail, yet the plan is made (it reads folder listings only)."""
    monkeypatch.setenv("SKYRANK_CACHE", str(tmp_path / "cache"))  # no throughput recorded by earlier builds
    root = make_university1652_placeholders(tmp_path / "University-Release", train=3, test=2, distractors=1, views=4)
    ckpt = tmp_path / "w.pth"
    ckpt.touch()
    plan = plan_build(BuildOptions(dataset="university1652", root=root, checkpoint=ckpt, directions=("d2s", "s2d"),
                                   out=tmp_path / "o", top_m=2))  # fmt: skip
    pairs = {(p.split, p.direction): (p.queries, p.gallery) for p in plan.pairs}
    assert pairs[("test", "d2s")] == (2 * 4 + 1, 3)  # 0000 has one drone view more, as the release
    assert pairs[("test", "s2d")] == (2, 3 * 4 + 1)
    assert plan.images_to_encode == (3 * 4 + 3) + (2 * 4 + 1) + (3 * 4 + 1) + 2 + 3
    assert plan.encode_seconds is None and "no build of sample4geo" in plan.throughput_note


def test_plan_checks_run_before_any_work(tree, tmp_path):
    with pytest.raises(OptionError, match="--top-m 50 is too large"):
        plan_build(**{**_options(tree, tmp_path / "ds"), "top_m": 50})
    with pytest.raises(OptionError, match="--root is required"):
        plan_build(dataset="university1652")


def test_dry_run_prints_the_plan_and_writes_nothing(tree, tmp_path):
    args = ["build", "--dataset", "university1652", "--root", str(tree["root"]), "--retriever", "precomputed",
            "--checkpoint", str(tree["emb"]), "--top-m", "3", "--direction", "d2s", "--direction", "s2d",
            "--out", str(tmp_path / "ds"), "--dry-run"]  # fmt: skip
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert "images to encode:" in result.output and "precomputed-university1652-s2d" in result.output
    result = CliRunner().invoke(cli.main, [*args, "--json", "-"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["images_to_encode"] < plan["encodes_per_direction"]
    assert {c["config"] for c in plan["configs"]} >= {"gallery-university1652", "precomputed-university1652-d2s"}
    assert not (tmp_path / "ds").exists()


def test_importing_the_build_loads_neither_datasets_nor_torch():
    """Issue 21, item 6: a missing --root is reported before the heavy imports."""
    code = "import sys, skyrank.build; print(sorted({'datasets', 'torch', 'pyarrow'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_the_plan_checks_free_space_against_its_estimate(tree, tmp_path, monkeypatch):
    import skyrank.atomic
    from skyrank.errors import NoSpaceError

    plan = plan_build(**_options(tree, tmp_path / "ds"))
    assert plan.checks[-1] == "free space" and plan.bytes_needed > 0
    monkeypatch.setattr(skyrank.atomic, "free_bytes", lambda path: plan.bytes_needed - 1)
    with pytest.raises(NoSpaceError, match="--out"):
        plan_build(**_options(tree, tmp_path / "ds"))
