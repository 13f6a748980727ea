"""``benchmarks/gpu_suite.py --dry-run`` keeps working: the model rows at tiny sizes on the CPU (issue 10)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_suite_dry_run_fills_the_model_rows(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    had_datasets = "datasets" in sys.modules
    out = tmp_path / "suite.json"
    assert suite.main(["--dry-run", "--only", "search,2b", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["row"], r["metric"].split(",")[0]): r for r in report["rows"]}
    assert report["dry_run"] and all(r["value"] and r["value"] > 0 for r in report["rows"])
    assert {name for name, _ in rows} == {"search", "rerank-2b (tiny, dry run)", "train-2b (tiny, dry run)"}
    assert "| row | what | value |" in capsys.readouterr().out
    if not had_datasets:
        assert "datasets" not in sys.modules  # the suite's path never imports it
