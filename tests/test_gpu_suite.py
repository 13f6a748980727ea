"""``benchmarks/gpu_suite.py --dry-run`` keeps working: the model rows of every family at tiny sizes on the CPU
(issues 10 and 19)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision")


def test_gpu_suite_dry_run_fills_the_model_rows_of_every_family(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    had_datasets = "datasets" in sys.modules
    out = tmp_path / "suite.json"
    only = ",".join(("search",) + FAMILIES)
    assert suite.main(["--dry-run", "--only", only, "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] and all(r["value"] and r["value"] > 0 for r in report["rows"])
    names = {r["row"] for r in report["rows"]}
    expected = {"search"} | {f"{kind}-{f.replace('_', '-')} (tiny, dry run)" for f in FAMILIES
                             for kind in ("rerank", "train")}  # fmt: skip
    assert names == expected
    for family in FAMILIES:  # fast and naive scoring, training on the shared prefix and on naive pairs
        name = f"{family.replace('_', '-')} (tiny, dry run)"
        rerank = [r for r in report["rows"] if r["row"] == f"rerank-{name}"]
        train = [r for r in report["rows"] if r["row"] == f"train-{name}"]
        paths = [r["metric"].split(",")[0] for r in rerank]
        assert paths == ["k=10 fast (shared prefix", "k=10 naive (every pair in full)"]
        assert float(rerank[0]["note"].split()[-1]) < 1e-4  # fast equals naive
        assert len(train) == 2
    assert "| row | what | value |" in capsys.readouterr().out
    if not had_datasets:
        assert "datasets" not in sys.modules  # the suite's path never imports it
