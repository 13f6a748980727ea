"""``skyrank demo``: the whole SkyLink method on the built-in synthetic benchmark, on CPU.

It drives both halves, so it sits on the build side with the other functions ``cli.py`` calls: the model half
(``skylink_model``) never imports the build.

1. build the SkyRank dataset (as ``skyrank build`` does on the synthetic benchmark, with
   :data:`DEMO_BENCHMARK`'s larger training split: a small Sample4Geo-recipe retriever, mined candidates, images
   embedded);
2. write a tiny random Qwen2-VL (:func:`skylink_model.testing.make_tiny_qwen2_vl`) — no hub download — and give
   it what the paper's backbone has and a random one lacks, a pretrained vision tower
   (:func:`skylink_model.pretrain_vision.pretrain_vision`: contrastive, on the training split only);
3. train SkyLink on the ``train`` split (LoRA + value head, relational soft-label loss, Eq. 8);
4. re-rank the retriever's top-10 on the ``test`` split and print the paper's Table-1 rows;
4b. train a second SkyLink with GeoRanker's Plackett–Luce loss (``run-pl``) and write one leaderboard
   (``skyrank bench``, :mod:`skylink_model.report.bench`) of the retriever, SkyLink (BCE and Plackett–Luce), fused,
   and the zero-shot listwise, pointwise and pairwise baselines on the same tiny backbone (:data:`DEMO_LEADERBOARD`);
   the zero-shot rows run on random tiny language weights, so they measure cost, not quality;
5. write ``report/report.html`` (:func:`skylink_model.report.write_report`): the table, the R@K curve and contact
   sheets of the queries SkyLink moved up the most.

The demo shows the method *working*, honestly: a tiny LVLM trained for minutes on CPU does not beat a trained CNN
retriever on its own (the paper's gains come from a pretrained 2B–7B backbone on GPU), so the demo reports three
rows — the retriever, SkyLink alone (which must clearly learn: the lower end of the 95% bootstrap interval of its R@1
is at least 1.5x the R@1 of a random order of the top-10, R@10/10) and SkyLink fused with the retriever (z-scores,
the weight chosen on validation locations held out of training: :mod:`skylink_model.fusion`), which must not lose
to the retriever on R@1 or AP. Without the vision pre-training (``pretrain_steps=0``) SkyLink sits near the
constant-prediction plateau and re-ranks little better than a random order: that is the ablation the README shows.
``eval.json`` records the check (``extra["demo"]``), the wall time, the CPU time and the load average of each stage:
the budget is a number of optimizer steps (:data:`DEMO_STEPS`, :data:`DEMO_PRETRAIN_STEPS`; deterministic), not
seconds, because shared machines stretch wall time. Measured numbers are in the README and BENCHMARKS.md
(``benchmarks/demo_ablation.py``).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylink_model.config import SkyLinkConfig

#: CPU-sized SkyLink settings for the demo. Each differs from the paper's defaults (SkyLinkConfig) for the reason
#: given, also in the README ("skyrank demo"); notes/tiny-reranker.md has the measurements behind them.
DEMO_SETTINGS: dict[str, Any] = {
    "k": 8,  # k = 8 beat k = 13 at equal CPU time: more groups per second for a tiny model
    "labels": "hard",  # with T = 1.0 below: no negative is a positive. The synthetic world has no near-duplicate
    "threshold": 1.0,  # tiles; T = 0.9 gave wrong region-mates labels of ~0.95, which works against R@1
    "learning_rate": 1e-3,  # a tiny backbone trained from (nearly) scratch takes larger steps than a pretrained 7B
    "batch_size": 1,  # one group per step: 4x the updates of the paper's 4 at the same CPU time (BENCHMARKS.md)
    "epochs": 100,  # an upper bound only: DEMO_STEPS ends training
    "min_pixels": 56 * 56,  # the image budget of a 96 px synthetic benchmark (the family default is for photos)
    "max_pixels": 112 * 112,
    "val_fraction": 0.1,  # locations held out of training, on which `--fuse auto` chooses the fusion weight
}

#: The demo's training budget in optimizer steps (deterministic; wall time depends on the machine's load).
DEMO_STEPS = 3000

#: The synthetic benchmark the demo builds (:func:`skyrank.benchmarks.synthetic.generate_synthetic` parameters).
#: ``skyrank build``'s default has 48 training locations: a SkyLink trained on their 43 (5 held out for validation)
#: memorised them (training R@1 81.5) and re-ranked the test split no better than a random order (8.6 vs 8.1);
#: 144 give it enough places to learn matching rather than places.
DEMO_BENCHMARK: dict[str, Any] = {"locations": 144}

#: The demo's retriever: :data:`skyrank.build.SYNTHETIC_RETRIEVER`'s recipe for 10 epochs (360 steps on 144
#: locations, test R@1 20.1; 20 epochs reach 31.3 in twice the time), cached beside the benchmark.
DEMO_RETRIEVER: dict[str, Any] = {"epochs": 10}

#: The tiny backbone (:func:`skylink_model.testing.make_tiny_qwen2_vl` arguments). transformers' default weight std
#: of 0.02 is sized for layers thousands wide; at width 64 it makes a near-identity network.
DEMO_MODEL: dict[str, Any] = {"initializer_range": 0.08}

#: Intra-op threads for the tiny backbone's stages (pre-training, training, evaluation): its matrices are too small
#: for a second thread to pay. On 2 cores, 3,000 training steps took 149 s with torch's default 2 threads and
#: 108 s with 1; evaluation 26 s and 18 s.
DEMO_THREADS = 1

#: The leaderboard's rows (``skyrank bench --reranker`` specs; ``{run}`` / ``{run_pl}`` are the two SkyLink runs).
DEMO_LEADERBOARD: tuple[str, ...] = (
    "retriever",
    "skylink-bce=skylink:{run}",
    "skylink-pl=skylink:{run_pl}",
    "skylink-bce+fused=fused:{run}",
    "listwise:{run}",
    "pointwise:{run}",
    "pairwise:{run}",
)

#: Rows of the leaderboard run on the first N test queries only (``skyrank bench --row-queries``): the zero-shot rows
#: measure cost, not quality, and cost per query needs no more; on all 1,152 they took most of the leaderboard's
#: 753 CPU s.
DEMO_LEADERBOARD_ROW_QUERIES: dict[str, int] = {"listwise": 128, "pointwise": 128, "pairwise": 128}

#: The note printed under the demo's leaderboard.
DEMO_LEADERBOARD_NOTE = (
    "The zero-shot rows (listwise, pointwise, pairwise) prompt the demo's tiny backbone, whose language model has "
    f"random weights: they measure cost, not quality, on the first {min(DEMO_LEADERBOARD_ROW_QUERIES.values())} "
    "queries. skylink-bce is the paper's loss "
    "(Eq. 8), skylink-pl GeoRanker's Plackett-Luce loss, both trained for the same steps; fused is skylink-bce with "
    "the retriever, W chosen on the held-out validation locations."
)

#: Vision-tower pre-training steps (:class:`skylink_model.pretrain_vision.VisionPretrainConfig`; 0 skips it).
DEMO_PRETRAIN_STEPS = 300


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _usage() -> dict[str, float]:
    """CPU seconds of this process and its children so far, and the 1-minute load average."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    return {"cpu": cpu, "wall": time.perf_counter(), "load": os.getloadavg()[0]}


def _stage(start: dict[str, float]) -> dict[str, float]:
    end = _usage()
    return {
        "wall_s": round(end["wall"] - start["wall"], 1),
        "cpu_s": round(end["cpu"] - start["cpu"], 1),
        "load_avg_1min": [round(start["load"], 2), round(end["load"], 2)],
    }


def demo_check(report: dict[str, Any]) -> dict[str, Any]:
    """Does SkyLink clearly learn, and does fusion not lose? Read from an eval JSON (percent values).

    ``learns``: the lower end of the 95% bootstrap interval of SkyLink's R@1 is at least 1.5x the R@1 of a random
    order of the retriever's top-10 (R@10 / 10). ``fused_not_worse``: the fused row's R@1, AP and AP_precision are
    at least the retriever's.
    """
    rows, ci = report["rows"], report.get("ci95", {})
    random_r1 = rows["retriever"]["R@10"] / 10.0
    out: dict[str, Any] = {"random_top10_R@1": round(random_r1, 2)}
    if "skylink" in rows:
        low, high = ci.get("skylink", {}).get("R@1", [float("nan"), float("nan")])
        out.update({
            "skylink_R@1": round(rows["skylink"]["R@1"], 2),
            "skylink_R@1_ci95": [round(low, 2), round(high, 2)],
            "ci_low_over_random": round(low / random_r1, 2) if random_r1 > 0 else None,
            "learns": bool(low >= 1.5 * random_r1),
        })  # fmt: skip
    if "skylink_fused" in rows:
        fused, base = rows["skylink_fused"], rows["retriever"]
        keys = [m for m in ("R@1", "AP", "AP_precision") if m in fused]
        out["fused_not_worse"] = bool(all(fused[m] >= base[m] - 1e-9 for m in keys))
    return out


@dataclass
class DemoResult:
    out: Path
    dataset: Path
    run: Path
    eval_json: Path
    table: str
    timings: dict[str, float]
    report: dict[str, Any]
    report_html: Path | None = None
    leaderboard: Path | None = None
    leaderboard_markdown: str = ""

    def summary(self) -> str:
        """Timings (wall and CPU time, load average) and the learning check, as lines for the console."""
        demo = self.report.get("extra", {}).get("demo", {})
        lines = [
            "time (wall / CPU, 1-min load average at the end): "
            + ", ".join(
                f"{k} {t['wall_s']:.0f}s / {t['cpu_s']:.0f}s (load {t['load_avg_1min'][1]:.1f})"
                for k, t in demo.get("timings", {}).items()
            )
        ]
        check = demo.get("check", {})
        if "skylink_R@1_ci95" in check:
            low, high = check["skylink_R@1_ci95"]
            verdict = "clearly learns" if check["learns"] else "does NOT clearly learn"
            lines.append(
                f"SkyLink alone: R@1 {check['skylink_R@1']:.2f} (95% CI {low:.2f}-{high:.2f}); a random order of the "
                f"top-10 gives {check['random_top10_R@1']:.2f}: it {verdict} (CI low >= 1.5x random)"
            )
        if "fused_not_worse" in check:
            lines.append(f"fused row not worse than the retriever on R@1 and AP: {check['fused_not_worse']}")
        return "\n".join(lines)


#: The file in a demo folder that records what was built and trained there (:func:`check_recipe`).
RECIPE_NAME = "demo_recipe.json"


def check_recipe(out: Path, recipe: dict[str, Any], *, overwrite: bool = False) -> None:
    """Record ``recipe`` in ``out`` (:data:`RECIPE_NAME`), refusing a folder that holds a demo of another recipe.

    A demo folder is reused stage by stage (dataset, backbones, run), so a dataset or run made with other settings,
    or by an earlier version of the demo (no recipe file), would be evaluated as if it were this one's. Such a
    folder raises :class:`~skyrank.errors.OutputExistsError` naming what changed, unless ``overwrite``. The same
    recipe resumes an interrupted run.
    """
    from skyrank.atomic import write_text_atomic
    from skyrank.errors import OutputExistsError

    recipe = json.loads(json.dumps(recipe))  # as stored (tuples become lists)
    path = out / RECIPE_NAME
    reason = None
    if path.is_file():
        earlier = json.loads(path.read_text())
        if earlier == recipe:
            return
        changed = sorted(k for k in set(earlier) | set(recipe) if earlier.get(k) != recipe.get(k))
        reason = f"a demo of another recipe (changed: {', '.join(changed)})"
    elif any((out / name).exists() for name in ("dataset", "run", "tiny-qwen2-vl", "eval.json")):
        reason = f"a demo written by an earlier version (no {RECIPE_NAME})"
    if reason is not None and not overwrite:
        raise OutputExistsError(
            f"{out} holds {reason}: its dataset and run do not match this demo",
            hint="Pass --overwrite to rebuild and retrain there, or choose another --out.",
        )
    write_text_atomic(path, json.dumps(recipe, indent=2, sort_keys=True) + "\n")


def run_demo(
    out: str | Path = "skyrank-demo",
    *,
    max_steps: int | None = None,
    max_eval_queries: int | None = None,
    labels: str | None = None,
    settings: dict[str, Any] | None = None,
    pretrain_steps: int | None = None,
    dataset: str | Path | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    report: bool = True,
    leaderboard: bool = True,
) -> DemoResult:
    """Build, train and evaluate SkyLink on the synthetic benchmark; returns paths, timings and the table.

    ``max_steps`` overrides :data:`DEMO_STEPS`; ``labels`` and ``settings`` override :data:`DEMO_SETTINGS`;
    ``pretrain_steps`` overrides :data:`DEMO_PRETRAIN_STEPS` (0: SkyLink starts from the random backbone);
    ``dataset`` uses an existing SkyRank folder (with a ``sample4geo-synthetic-d2s`` config) instead of building.
    ``leaderboard`` trains the Plackett–Luce run and writes ``leaderboard/`` (:data:`DEMO_LEADERBOARD`; with
    ``max_eval_queries``, ``leaderboard-q<N>/``).
    """
    from skylink_model.evaluation import evaluate
    from skylink_model.model import SkyLinkModel
    from skylink_model.pretrain_vision import RECORD_NAME, VisionPretrainConfig, pretrain_vision
    from skylink_model.testing import make_tiny_qwen2_vl
    from skylink_model.train import train_skylink
    from skyrank.benchmarks.synthetic import ensure_synthetic
    from skyrank.build import SYNTHETIC_RETRIEVER, build_dataset, synthetic_retriever_checkpoint
    from skyrank.format import schema

    out = Path(out)
    chosen = {**DEMO_SETTINGS, **(settings or {})}
    if labels is not None:
        chosen["labels"] = labels
    n_pretrain = DEMO_PRETRAIN_STEPS if pretrain_steps is None else int(pretrain_steps)
    steps = DEMO_STEPS if max_steps is None else int(max_steps)
    recipe = {
        "benchmark": DEMO_BENCHMARK, "retriever": DEMO_RETRIEVER, "model": DEMO_MODEL, "pretrain_steps": n_pretrain,
        "settings": chosen, "steps": steps, "dataset": None if dataset is None else str(Path(dataset).resolve()),
        "leaderboard_row_queries": DEMO_LEADERBOARD_ROW_QUERIES,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    check_recipe(out, recipe, overwrite=overwrite)
    timings: dict[str, dict[str, float]] = {}
    t0 = _usage()
    if dataset is not None:
        dataset = Path(dataset)
    else:
        dataset = out / "dataset"
        if (dataset / "skyrank_manifest.json").is_file() and not overwrite:
            pass  # a complete earlier build (the manifest is written last) of the same recipe: reuse it
        else:
            root = ensure_synthetic(progress=progress, **DEMO_BENCHMARK)
            retriever = {**SYNTHETIC_RETRIEVER, **DEMO_RETRIEVER}
            checkpoint = synthetic_retriever_checkpoint(root, recipe=retriever, device=device, progress=progress)
            build_dataset(
                root=root, checkpoint=checkpoint, arch=retriever["arch"], image_size=retriever["image_size"],
                out=dataset, overwrite=True, device=device, progress=progress,
            )  # fmt: skip
    timings["build"] = _stage(t0)

    config_name = schema.retriever_config_name("sample4geo", "synthetic", "d2s")
    with _threads(DEMO_THREADS):  # the tiny backbone's stages
        t0 = _usage()
        random_base = out / "tiny-qwen2-vl-random"
        if overwrite or not (random_base / "config.json").is_file():
            make_tiny_qwen2_vl(random_base, **DEMO_MODEL)
        base = random_base
        if n_pretrain > 0:
            base = out / "tiny-qwen2-vl-pretrained"
            if overwrite or not (base / RECORD_NAME).is_file():
                pretrain = VisionPretrainConfig(
                    steps=n_pretrain, val_fraction=chosen["val_fraction"], seed=chosen.get("seed", 0),
                    min_pixels=chosen["min_pixels"], max_pixels=chosen["max_pixels"],
                )  # fmt: skip
                pretrain_vision(random_base, dataset, config_name, base, pretrain, progress=progress)
        timings["pretrain"] = _stage(t0)

        t0 = _usage()
        run = out / "run"
        config = SkyLinkConfig(base_model=str(base), **chosen)
        if overwrite and run.exists():
            import shutil

            shutil.rmtree(run)
        if not (run / "value_head.safetensors").is_file():
            train_skylink(
                config, dataset, config_name, out_dir=run, max_steps=steps, device=device, progress=progress,
                resume=run.exists(),
            )  # fmt: skip
        timings["train"] = _stage(t0)

        t0 = _usage()
        from skylink_model.data import read_validation

        model = SkyLinkModel.from_pretrained(run, device=device)
        eval_json = out / "eval.json"
        result = evaluate(
            model, dataset, config_name, "test", top_k=10, max_queries=max_eval_queries, progress=progress,
            json_path=eval_json, per_query_path=out / "eval.per_query.jsonl", fuse="auto",
            validation=read_validation(run),
        )  # fmt: skip
        timings["eval"] = _stage(t0)
        board = None
        if leaderboard:
            board = _leaderboard(out, dataset, config, config_name, steps=steps, max_eval_queries=max_eval_queries,
                                 device=device, overwrite=overwrite, progress=progress, timings=timings)  # fmt: skip
    data = json.loads(eval_json.read_text())
    data.setdefault("extra", {})["demo"] = {
        "check": demo_check(data),
        "settings": chosen,
        "steps": steps,
        "benchmark": DEMO_BENCHMARK,
        "retriever": DEMO_RETRIEVER,
        "model": DEMO_MODEL,
        "pretrain_steps": n_pretrain,
        "threads": DEMO_THREADS,
        "timings": timings,
        "cpu_count": os.cpu_count(),
    }
    from skylink_model.evaluation import write_text_atomic

    write_text_atomic(eval_json, json.dumps(data, indent=2) + "\n")
    html = None
    if report:
        from skylink_model.report.page import write_report

        html = write_report([eval_json], out / "report", queries=8, select="best", title="skyrank demo").html
    flat = {k: v["wall_s"] for k, v in timings.items()}
    return DemoResult(out, dataset, run, eval_json, result.format_table(), flat, data, html,
                      board.json_path if board else None, board.markdown if board else "")  # fmt: skip


def _leaderboard(out: Path, dataset: Path, config: SkyLinkConfig, config_name: str, *, steps: int,
                 max_eval_queries: int | None, device: str, overwrite: bool, progress: bool,
                 timings: dict[str, dict[str, float]]) -> Any:  # fmt: skip
    """Train the Plackett–Luce run (as the BCE one, but the loss) and write the demo's leaderboard."""
    import dataclasses

    from skylink_model.report.bench import run_bench
    from skylink_model.train import train_skylink

    t0 = _usage()
    run, run_pl = out / "run", out / "run-pl"
    if overwrite and run_pl.exists():
        import shutil

        shutil.rmtree(run_pl)
    if not (run_pl / "value_head.safetensors").is_file():
        train_skylink(
            dataclasses.replace(config, loss="plackett-luce"), dataset, config_name, out_dir=run_pl, max_steps=steps,
            device=device, progress=progress, resume=run_pl.exists(),
        )  # fmt: skip
    timings["train_pl"] = _stage(t0)
    t0 = _usage()
    folder = out / ("leaderboard" if max_eval_queries is None else f"leaderboard-q{max_eval_queries}")
    specs = [spec.format(run=run, run_pl=run_pl) for spec in DEMO_LEADERBOARD]
    board = run_bench(
        dataset, [config_name], specs, folder, top_k=10, max_queries=max_eval_queries, device=device,
        overwrite=overwrite, progress=progress, notes=[DEMO_LEADERBOARD_NOTE], title="skyrank demo",
        row_queries=DEMO_LEADERBOARD_ROW_QUERIES,
    )  # fmt: skip
    timings["leaderboard"] = _stage(t0)
    return board
