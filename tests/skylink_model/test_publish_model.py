"""skylink_model.publish_model: the model card of a SkyLink run and its one-commit upload (fake Hub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyrank.errors import PublishError
from skyrank.loading import split_front_matter
from tests.skyrank.fake_hub import FakeHub

TOKEN = "hf_testWRITEtoken_5f3a9c"


@pytest.fixture(autouse=True)
def _no_xet(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture()
def hub() -> FakeHub:
    with FakeHub(tokens={TOKEN: "write"}) as server:
        yield server


def _run_dir(path: Path, with_eval: bool = True) -> Path:
    path.mkdir(parents=True)
    adapter = {"base_model_name_or_path": "Qwen/Qwen2-VL-7B-Instruct", "r": 16, "lora_alpha": 32, "peft_type": "LORA"}
    (path / "adapter_config.json").write_text(json.dumps(adapter))
    (path / "adapter_model.safetensors").write_bytes(b"\0" * 64 + b"adapter")
    (path / "value_head.safetensors").write_bytes(b"\0" * 32 + b"head")
    (path / "skylink_config.json").write_text(json.dumps({"base_model": "Qwen/Qwen2-VL-7B-Instruct", "k": 13,
                                                          "lora_r": 16, "threshold": 0.5}))  # fmt: skip
    if with_eval:
        rows = {
            "retriever": {"R@1": 90.1, "R@5": 97.0, "R@10": 98.0, "AP": 91.5, "AP_conservative": 93.0},
            "skylink": {"R@1": 93.2, "R@5": 98.0, "R@10": 98.0, "AP": 93.9, "AP_conservative": 95.1},
            "improvement": {"R@1": 3.1, "R@5": 1.0, "R@10": 0.0, "AP": 2.4, "AP_conservative": 2.1},
        }
        (path / "eval.json").write_text(json.dumps({"config": "sample4geo-university1652-d2s", "split": "test",
                                                    "top_k": 10, "num_queries": 8, "rows": rows}))  # fmt: skip
    return path


def test_model_card_rendering(tmp_path: Path) -> None:
    from skylink_model.publish_model import render_model_card

    card = render_model_card(_run_dir(tmp_path / "run"), "alice/skylink-test")
    meta, body = split_front_matter(card)
    assert meta["base_model"] == "Qwen/Qwen2-VL-7B-Instruct" and meta["library_name"] == "peft"
    # a schema-1 report: its AP_conservative was the top-k list AP, so the paper's columns stay empty
    assert "| +SkyLink | 93.20 | 98.00 | 98.00 | 93.90 | – | – |" in body
    assert "AP_precision" in body and "appendix A.1" in body
    assert "| Improvement | +3.10 |" in body and "| Retriever | 90.10 |" in body
    assert "2603.08063" in body and "sample4geo-university1652-d2s" in body and "`lora_r` | `16`" in body
    v2 = _run_dir(tmp_path / "v2")
    report = json.loads((v2 / "eval.json").read_text())
    report["schema_version"] = 2
    report["rows"]["skylink_fused"] = {"R@1": 94.0, "R@5": 98.5, "R@10": 99.0, "AP": 94.2, "AP_precision": 95.9,
                                       "AP_conservative": 95.0}  # fmt: skip
    (v2 / "eval.json").write_text(json.dumps(report))
    body2 = split_front_matter(render_model_card(v2, "alice/x"))[1]
    assert "| +SkyLink | 93.20 | 98.00 | 98.00 | 93.90 | – | 95.10 |" in body2
    assert "| +SkyLink fused | 94.00 | 98.50 | 99.00 | 94.20 | 95.90 | 95.00 |" in body2
    bare = render_model_card(_run_dir(tmp_path / "bare", with_eval=False), "alice/x")
    assert "No evaluation report" in bare
    assert "Zheng" not in card  # the benchmark's BibTeX comes from the lookup the caller passes


def test_model_card_cites_the_benchmark_through_the_lookup(tmp_path: Path) -> None:
    from skylink_model.publish_model import render_model_card
    from skyrank.benchmarks import benchmark_citation, get_benchmark

    citation = get_benchmark("university1652").citation.strip()
    card = render_model_card(_run_dir(tmp_path / "run"), "alice/x", benchmark_citation=benchmark_citation)
    assert citation and citation in card
    assert benchmark_citation("no-such-benchmark") is None


def test_publish_model_uploads_and_refuses_incomplete_runs(hub: FakeHub, tmp_path: Path) -> None:
    from skylink_model.publish_model import publish_model

    run = _run_dir(tmp_path / "run")
    report = publish_model(run, "alice/skylink", token=TOKEN, endpoint=hub.endpoint, dry_run=True, progress=False)
    assert hub.write_requests() == [] and {f.status for f in report.files} == {"new"}
    report = publish_model(run, "alice/skylink", token=TOKEN, endpoint=hub.endpoint, progress=False)
    assert report.uploaded
    files = hub.files("alice/skylink", repo_type="model")
    assert set(files) == {".gitattributes", "README.md", "eval.json", "adapter_config.json",
                          "adapter_model.safetensors", "value_head.safetensors", "skylink_config.json"}  # fmt: skip
    assert files["value_head.safetensors"] == (run / "value_head.safetensors").read_bytes()
    assert len(hub.commits("alice/skylink", repo_type="model")) == 2
    again = publish_model(run, "alice/skylink", token=TOKEN, endpoint=hub.endpoint, progress=False)
    assert not again.uploaded and len(hub.commits("alice/skylink", repo_type="model")) == 2

    (run / "value_head.safetensors").unlink()
    (run / "skylink_config.json").unlink()
    with pytest.raises(PublishError, match="missing value_head.safetensors, skylink_config.json") as err:
        publish_model(run, "alice/skylink", token=TOKEN, endpoint=hub.endpoint, progress=False)
    assert "value_head.safetensors" in str(err.value)
