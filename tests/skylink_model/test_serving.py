"""``skyrank export-model --format vllm``: the merged folder (LoRA of both towers merged, value head as the
single-output ``score`` layer) reproduces the run's scores when loaded with plain ``transformers``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from skylink_model.model import SkyLinkModel, get_skylink_model
from skylink_model.serving import SCORE_KEY, export_vllm, score_exported
from skyrank.errors import OutputExistsError, SkyRankError


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def run_dir(tiny_config, tmp_path):
    """A saved run whose LoRA matrices (language and vision) and head are non-trivial (lora_B starts at zero)."""
    model = get_skylink_model(tiny_config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.lora_parameters().values():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        model.value_head.weight.copy_(torch.randn(model.value_head.weight.shape, generator=gen))
    return model.save_pretrained(tmp_path / "run")


def _keys(folder):
    out = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def test_exported_folder_reproduces_the_run_scores(run_dir, tiny_qwen2_vl_dir, images, tmp_path):
    out = export_vllm(run_dir, tmp_path / "served")
    run = SkyLinkModel.from_pretrained(run_dir)
    queries, candidates = images[:4], images[4:8]
    expected = run.score_pairs(queries, candidates)
    got = score_exported(out, queries, candidates)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    weights, base = _keys(out), _keys(tiny_qwen2_vl_dir)
    assert weights[SCORE_KEY].shape == (1, run.hidden_size) and weights[SCORE_KEY].dtype == torch.float32
    assert torch.equal(weights[SCORE_KEY], run.value_head.weight.detach())
    assert not any("lora_" in k for k in weights)
    # Both towers carry the merged LoRA deltas: vLLM would ignore a vision-tower adapter, so it must be merged.
    changed = {k for k in base if k in weights and not torch.equal(base[k], weights[k])}
    vision = {k for k in changed if "visual" in k}  # saved in the hub layout: visual.* and model.layers.*
    assert vision and {k.split(".")[-2] for k in changed - vision} == {"q_proj", "k_proj", "v_proj"}
    config = json.loads((out / "config.json").read_text())
    # vLLM's classify adapter sizes `score` from the text config's num_labels (len(id2label)); default would be 2
    for cfg in (config, config.get("text_config", config)):
        assert len(cfg["id2label"]) == 1
    readme = (out / "README.md").read_text()
    assert "--runner pooling --convert classify" in readme and "/score" in readme and "/classify" in readme


def test_the_vision_merge_matters(run_dir, images, tmp_path):
    """Dropping the vision-tower deltas (what serving the adapter with vLLM would do) changes the scores."""
    out = export_vllm(run_dir, tmp_path / "served")
    run = SkyLinkModel.from_pretrained(run_dir)
    with torch.no_grad():
        for name, p in run.lora_parameters().items():
            if ".visual." in name and "lora_B" in name:
                p.zero_()
    language_only = run.score_pairs(images[:3], images[3:6])
    merged = score_exported(out, images[:3], images[3:6])
    assert (language_only - merged).abs().max() > 1e-3


def test_export_errors(run_dir, tmp_path):
    out = export_vllm(run_dir, tmp_path / "served")
    with pytest.raises(OutputExistsError):
        export_vllm(run_dir, out)
    with pytest.raises(SkyRankError, match="not a SkyLink run folder"):
        export_vllm(tmp_path, tmp_path / "x")


def test_export_model_command_line(run_dir, tmp_path):
    from click.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.main, ["export-model", str(run_dir), "--format", "vllm", "--out",
                                           str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "--runner pooling --convert classify" in result.output
    assert (tmp_path / "cli" / "skylink_config.json").is_file() and (tmp_path / "cli" / "README.md").is_file()


@pytest.mark.gpu
def test_vllm_serves_the_export_with_the_run_scores(run_dir, images, tmp_path):
    """Where vLLM is installed (a GPU machine): its classify runner on the export gives sigmoid(S) of the run."""
    vllm = pytest.importorskip("vllm")
    from skylink_model.model import pair_template_text

    out = export_vllm(run_dir, tmp_path / "served")
    run = SkyLinkModel.from_pretrained(run_dir)
    expected = run.score_pairs(images[:3], images[3:6])
    template = pair_template_text(run.processor, run.config.prompt)
    llm = vllm.LLM(str(out), runner="pooling", convert="classify", dtype="float32", enforce_eager=True)
    outputs = llm.classify(
        [{"prompt": template, "multi_modal_data": {"image": [q, c]}} for q, c in zip(images[:3], images[3:6],
                                                                                       strict=True)]
    )
    probs = torch.tensor([o.outputs.probs[0] for o in outputs])
    torch.testing.assert_close(probs, torch.sigmoid(expected), atol=2e-3, rtol=0)
