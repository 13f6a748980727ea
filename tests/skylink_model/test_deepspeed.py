"""DeepSpeed ZeRO-2 for real: ``accelerate launch --config_file .../deepspeed_zero2.yaml cli.py train`` on DeepSpeed's
CPU accelerator, a checkpoint, and a resume that continues the loss curve exactly (SkyLink trains this way, Eq. 8)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.skylink_model.test_data import RETRIEVER_CONFIG, make_tiny_skyrank

pytest.importorskip("deepspeed", reason="DeepSpeed is in the `test` extra (pip install '.[test]')")

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "skylink_model" / "accelerate_configs" / "deepspeed_zero2.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(data: Path, model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--num_processes", "1",
        "--main_process_port", str(_free_port()), str(ROOT / "tests" / "skylink_model" / "deepspeed_cpu_entry.py"),
        "train", "--data", str(data), "--config", RETRIEVER_CONFIG, "--model", str(model), "--out", str(out),
        "--k", "3", "--batch-size", "2", "--max-steps", "2", "--save-every", "1", "--log-every", "1",
        "--lora-dropout", "0", "--mixed-precision", "bf16", "--quiet", *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_zero2_trains_checkpoints_and_resumes_on_the_cpu_accelerator(tmp_path):
    import shutil

    from skylink_model.testing import make_tiny_qwen2_vl

    data = make_tiny_skyrank(tmp_path / "ds", n_locations=4, m=4)
    model = make_tiny_qwen2_vl(tmp_path / "tiny")
    run = tmp_path / "run"
    proc = _launch(data, model, run)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = run / "checkpoint-1"
    # A DeepSpeed engine checkpoint (ZeRO-2 optimizer partition), not accelerate's plain optimizer.bin.
    assert list((ckpt / "pytorch_model").glob("*zero_pp_rank_0_mp_rank_00_optim_states.pt")), sorted(ckpt.rglob("*"))
    assert not (ckpt / "optimizer.bin").exists()
    # --mixed-precision bf16: DeepSpeed cast the whole module (the crash of issue 10), the head saved fp32.
    trained = load_file(str(ckpt / "trainable_params.safetensors"))
    assert {t.dtype for n, t in trained.items() if "lora_" in n} == {torch.bfloat16}
    head = load_file(str(run / "value_head.safetensors"))["value_head.weight"]
    assert head.dtype == torch.float32
    assert not torch.equal(head, head.bfloat16().float())  # DeepSpeed's fp32 master copy, not the bf16 module cast
    full = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in full] == [1, 2]

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(ckpt, resumed_dir / "checkpoint-1")
    proc = _launch(data, model, resumed_dir, "--resume")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resumed = [json.loads(line) for line in (resumed_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [2]
    assert resumed[0]["loss"] == pytest.approx(full[1]["loss"], rel=1e-5)
    assert resumed[0]["grad_norm"] == pytest.approx(full[1]["grad_norm"], rel=1e-4)
    result = json.loads((resumed_dir / "train_result.json").read_text())
    assert result["resumed_from"].endswith("checkpoint-1") and result["steps"] == 2
