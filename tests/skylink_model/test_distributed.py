"""--batch-size is groups per optimizer step in TOTAL: 2 CPU processes (gloo) train exactly like 1 (SkyLink, Eq. 8)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from skylink_model.config import SkyLinkConfig
from skylink_model.train import batch_layout, check_process_count, train_skylink
from skyrank.errors import TrainingError
from tests.skylink_model.test_data import RETRIEVER_CONFIG, make_tiny_skyrank

ROOT = Path(__file__).resolve().parents[2]


def test_batch_layout_splits_the_total_and_refuses_what_does_not_divide():
    assert batch_layout(4, 1).to_dict() == {"total": 4, "per_device": 1, "accumulation": 4, "processes": 1}
    two = batch_layout(4, 2)
    assert (two.per_device, two.accumulation, two.processes) == (1, 2, 2)
    assert two.describe() == "4 groups per optimizer step = 1 per device x 2 accumulation x 2 process(es)"
    with pytest.raises(TrainingError, match=r"--batch-size 3 .* cannot be split over 2 processes.*multiple of 2"):
        batch_layout(3, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_gloo_run_equals_one_process_run(tmp_path):
    from skylink_model.testing import make_tiny_qwen2_vl

    data = make_tiny_skyrank(tmp_path / "ds", n_locations=4, m=4)
    tiny = make_tiny_qwen2_vl(tmp_path / "tiny")
    knobs = {"k": 3, "batch_size": 2, "epochs": 2, "learning_rate": 2e-2, "warmup_ratio": 0.0, "lora_dropout": 0.0}
    one = train_skylink(
        SkyLinkConfig(base_model=str(tiny), **knobs), data, RETRIEVER_CONFIG, out_dir=tmp_path / "one",
        device="cpu", progress=False, report_to=None, log_every=1,
    )  # fmt: skip
    assert one.steps == 4  # 4 groups, 2 per step, 2 epochs

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [
        # `accelerate launch --cpu` starts one process unless MPI is set up; torchrun gives 2 gloo processes.
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        str(ROOT / "cli.py"), "train", "--data", str(data), "--config", RETRIEVER_CONFIG, "--model", str(tiny),
        "--out", str(tmp_path / "two"), "--k", "3", "--batch-size", "2", "--epochs", "2", "--lr", "2e-2",
        "--warmup-ratio", "0", "--lora-dropout", "0", "--log-every", "1", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    log = [json.loads(line) for line in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert log[0]["batch"] == "2 groups per optimizer step = 1 per device x 1 accumulation x 2 process(es)"
    assert [r["loss"] for r in log] == pytest.approx(one.losses, rel=1e-4, abs=1e-6)
    assert [r["groups_seen"] for r in log] == [2, 4, 6, 8]
    result = json.loads((tmp_path / "two" / "train_result.json").read_text())
    assert result["steps"] == 4 and result["batch"] == {"total": 2, "per_device": 1, "accumulation": 1, "processes": 2}



def test_a_launcher_accelerate_does_not_see_is_refused():
    """accelerate + DeepSpeed on a GPU-less machine reports 1 process on every rank (seen with 2 ranks launched by
    ``accelerate launch --config_file .../deepspeed_zero2.yaml --num_processes 2``): training would repeat groups."""
    check_process_count(2, {"WORLD_SIZE": "2"})
    check_process_count(1, {})
    with pytest.raises(TrainingError, match="launcher started 2 processes but accelerate reports 1"):
        check_process_count(1, {"WORLD_SIZE": "2"}, "DistributedType.DEEPSPEED, cpu")
