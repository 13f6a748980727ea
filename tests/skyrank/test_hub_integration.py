"""Opt-in: publish a tiny dataset to a real Hub repo and load it back (``pytest -m hub``).

Skipped unless ``HF_TOKEN`` and ``SKYRANK_TEST_REPO`` (a throw-away dataset repo id you own) are set. Uses the ids
plus images of the synthetic benchmark only (its licence allows redistribution); the repo is created private.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skyrank.loading import load_skyrank
from skyrank.publish import publish_dataset
from tests.skyrank.fake_hub import make_dataset_folder, make_images

pytestmark = [
    pytest.mark.hub,
    pytest.mark.skipif(
        not (os.environ.get("HF_TOKEN") and os.environ.get("SKYRANK_TEST_REPO")),
        reason="set HF_TOKEN and SKYRANK_TEST_REPO (a throw-away dataset repo id) to run against the real Hub",
    ),
]


def test_publish_and_load_on_the_real_hub(tmp_path: Path) -> None:
    repo = os.environ["SKYRANK_TEST_REPO"]
    images = make_images(tmp_path / "images")
    folder = make_dataset_folder(tmp_path / "ds", images, with_images=True)
    report = publish_dataset(folder, repo, private=True, progress=False)
    assert report.commit_oid
    again = publish_dataset(folder, repo, private=True, progress=False)
    assert not again.changes and not again.uploaded
    ds = load_skyrank(repo, "tiny-synthetic-d2s", split="test", cache_dir=tmp_path / "cache")
    assert len(ds) == 8 and ds[0]["query_image"].size[0] > 0
