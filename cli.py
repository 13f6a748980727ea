"""The ``skyrank`` command line. Thin: every command parses its options and calls one library function.

Library errors (:class:`skyrank.errors.SkyRankError` subclasses) become one message and one hint: the error's own
``hint`` when the raise site knows the fix, else :data:`COMMAND_HINTS` for the command that failed, else
:data:`ERROR_HINTS` for the error type. Any other exception is a bug: one line saying so, and its traceback only
with ``skyrank --debug``. Heavy libraries (torch, datasets, ...) are imported inside the commands, so a bad option
is reported within a second.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Before torch is imported anywhere: OpenMP threads that wait for each other sleep instead of spinning, so that on a
# shared machine a busy core does not stall every parallel region (BENCHMARKS.md, "The first build").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402

from skyrank import errors  # noqa: E402

#: error type → (exit code, what to do). The message of the error itself says what is wrong. Looked up along the
#: error's class hierarchy, most specific first.
ERROR_HINTS: dict[type[errors.SkyRankError], tuple[int, str]] = {
    errors.SkyRankError: (1, "Fix the option or file named above; `skyrank <command> --help` lists every option."),
    errors.OptionError: (2, "Fix the option named above; `skyrank <command> --help` lists the valid values."),
    errors.UnknownNameError: (2, "Use one of the names listed above (`skyrank retriever list` for retrievers)."),
    errors.BenchmarkLayoutError: (
        3, "Point --root at the benchmark folder (e.g. .../University-Release or .../SUES-200-512x512)."
    ),
    errors.BadImageError: (
        4, "Fix or remove the listed files, or pass --skip-bad-images to leave them out (they are listed in the card)."
    ),
    errors.CheckpointMismatchError: (5, "Check that --checkpoint is the right file for --retriever/--arch/--opts."),
    errors.MissingWeightsError: (
        5, "Pass --checkpoint with trained weights (`skyrank retriever train` makes them), or --random-weights to "
        "build from untrained weights on purpose (the card then says so)."
    ),
    errors.OutputError: (6, "Choose another --out."),
    errors.OutputExistsError: (6, "Pass --overwrite to replace it, or choose another --out."),
    errors.ValidationError: (7, "The folder is not a valid SkyRank dataset; rebuild it with `skyrank build`."),
    errors.MissingDependencyError: (8, "Install the extra named above."),
    errors.PublishError: (9, "Nothing was changed on the Hub unless the message says so."),
    errors.TrainingError: (10, "Fix the cause, then re-run with --resume to continue from the last checkpoint."),
    errors.EvalFileError: (11, "Pass the JSON files `skyrank eval --json` wrote (with --per-query for pictures)."),
    # faults of the machine or the user's files (issue 21); the raise site's hint names the file and the fix
    errors.StorageError: (6, "Write to a folder on a disk you can write to (--out, SKYRANK_CACHE or HF_HOME)."),
    errors.NoSpaceError: (12, "Free space on that disk, or write to a larger one (--out, SKYRANK_CACHE or HF_HOME)."),
    errors.OutOfMemoryError: (
        13, "Ask for less memory at once: a smaller --batch-size (skyrank train: --micro-batch-size or "
        "--gradient-checkpointing), fewer --num-workers, or another device; `skyrank train/eval --plan` sizes a "
        "SkyLink run first."
    ),
    errors.CorruptShardError: (
        7, "Run `skyrank validate` on the folder, then rebuild it (`skyrank build`) or re-download it."
    ),
    errors.CandidateFileError: (2, "Fix the line named above (one `query,candidate[,score]` row per pair)."),
    errors.RunFolderError: (5, "Pass --adapter the --out folder of a finished `skyrank train`, or train again."),
    errors.HubRequestError: (9, "Check the repo id, --revision and your token (HF_TOKEN), then re-run."),
}  # fmt: skip

#: (command, error type) → the hint where the type's generic one would name the wrong flag.
COMMAND_HINTS: dict[tuple[str, type[errors.SkyRankError]], str] = {
    ("eval", errors.BenchmarkLayoutError): "Point --images-root at your copy of the benchmark named above.",
    ("train", errors.BenchmarkLayoutError): "Point --images-root at your copy of the benchmark named above.",
    ("synth", errors.OutputExistsError): "Pass --overwrite to replace it, or choose another --out.",
    ("train", errors.OutputExistsError): "Pass --resume to continue that run, or choose another --out.",
    ("train", errors.UnknownNameError): "Pass --config with one of the configs listed above.",
    ("eval", errors.UnknownNameError): "Pass --config with one of the configs listed above.",
    ("validate", errors.ValidationError): "Pass the folder `skyrank build` wrote (it holds skyrank_manifest.json).",
    ("publish", errors.ValidationError): "Fix the problems listed above, or rebuild with `skyrank build`.",
}


def error_exit(e: errors.SkyRankError, command: str) -> tuple[int, str]:
    """(exit code, hint) for an error raised by ``command`` (see the module docstring)."""
    code = next(ERROR_HINTS[t][0] for t in type(e).__mro__ if t in ERROR_HINTS)
    hint = e.hint or next(
        (COMMAND_HINTS[(command, t)] for t in type(e).__mro__ if (command, t) in COMMAND_HINTS), None
    ) or next(ERROR_HINTS[t][1] for t in type(e).__mro__ if t in ERROR_HINTS)
    return code, hint


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and (root.obj or {}).get("debug")) or os.environ.get("SKYRANK_DEBUG") == "1"


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context(silent=True)
        command = ctx.info_name if ctx is not None else fn.__name__
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except errors.SkyRankError as e:
            if _debug():
                raise
            code, hint = error_exit(e, command or "")
            click.secho(f"Error: {e}", fg="red", err=True)
            click.echo(hint, err=True)
            sys.exit(code)
        except KeyboardInterrupt:
            click.echo("Interrupted; outputs are written atomically, so nothing half-written was left.", err=True)
            sys.exit(130)
        except Exception as e:  # a bug: one line, the traceback only with --debug
            if _debug():
                raise
            # a full disk, a read-only folder or memory running out, which the raise site did not name
            named = errors.storage_error(e) or errors.memory_error(e)
            if named is not None:
                code, hint = error_exit(named, command or "")
                click.secho(f"Error: {named}", fg="red", err=True)
                click.echo(hint, err=True)
                sys.exit(code)
            click.secho(f"Error: unexpected {type(e).__name__}: {e}", fg="red", err=True)
            click.echo(
                f"This is a bug in SkyRank. Run `skyrank --debug {command} ...` for the traceback and report it.",
                err=True,
            )
            sys.exit(1)

    return wrapper


# ---------------------------------------------------------------------------------------------- shared options
def _device_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")(fn)


def _plan_device(device: str | None) -> str | None:
    """--plan sizes the run for a GPU unless ``--device cpu`` is given (then the CPU process and allocator)."""
    return "cpu" if device == "cpu" else None


def _resolve_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _lvlm_device(device: str | None) -> str:
    """The device of a command that loads an LVLM. On the CPU this process does that one job, so it also fixes
    glibc's mmap threshold (:func:`skylink_model.cpu_allocator.fix_mmap_threshold`; the environment's
    ``MALLOC_MMAP_THRESHOLD_`` wins): without it LLaVA-OneVision-0.5B's fp32 training step kept 18.7 GiB, not 6.2."""
    resolved = _resolve_device(device)
    if resolved == "cpu":
        from skylink_model.cpu_allocator import fix_mmap_threshold

        fix_mmap_threshold()
    return resolved


def _quiet_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--quiet", is_flag=True, help="No progress bars.")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="skyrank")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error (also SKYRANK_DEBUG=1).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """SkyRank: re-ranking datasets for cross-view UAV geo-localization, and the SkyLink re-ranker.

    \b
    Start here:  skyrank build          (the built-in synthetic benchmark, end to end, on CPU)
                 skyrank demo           (build + train a tiny SkyLink + evaluate, on CPU)
                 skyrank --debug build ...   (any command, with the traceback of an error)
    """
    ctx.obj = {"debug": debug}


# ------------------------------------------------------------------------------------------------------- build
BUILD_EXAMPLES = """
\b
Examples:
  skyrank build
  skyrank build --dataset university1652 --root /data/University-Release \\
      --retriever sample4geo --checkpoint weights_e1_0.9515.pth --out skyrank/
  skyrank build --dataset sues200 --altitude 150 --root /data/SUES-200-512x512 \\
      --retriever sample4geo --checkpoint runs/s4g-sues150/weights_end.pth --out skyrank/
  skyrank build --dataset university1652 --root /data/University-Release --checkpoint weights_e1_0.9515.pth \\
      --embeddings --out skyrank/      # + embeddings-sample4geo-university1652, for `skyrank remine`
  skyrank build --dataset university1652 --root /data/University-Release --checkpoint weights_e1_0.9515.pth \\
      --direction d2s --direction s2d --dry-run      # the plan: counts, sizes, disk, checks; nothing decoded
"""


@main.command(epilog=BUILD_EXAMPLES)
@click.option("--dataset", default="synthetic", show_default=True,
              help="university1652, sues200, synthetic, vigor_same, vigor_cross, cvusa, cvact, cvact_test, "
              "cvact_test_1to1, denseuav or university1652_street.")
@click.option("--root", type=click.Path(path_type=Path), help="Benchmark root (default for synthetic: cached).")
@click.option("--altitude", help="SUES-200 altitude: 150, 200, 250 or 300.")
@click.option(
    "--direction",
    "directions",
    multiple=True,
    default=("d2s",),
    show_default=True,
    type=click.Choice(["d2s", "s2d"]),
    help="d2s: drone query → satellite gallery; s2d the reverse. Repeatable.",
)
@click.option(
    "--retriever", default="sample4geo", show_default=True,
    help="sample4geo, mccg, sdpl or precomputed (`skyrank retriever list`).",
)
@click.option(
    "--checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Retriever weights (or the embeddings file for precomputed).",
)
@click.option("--arch", help="timm architecture for sample4geo (default convnext_base.fb_in22k_ft_in1k_384).")
@click.option("--image-size", type=int, help="Retriever input size override.")
@click.option(
    "--opts", type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="MCCG/SDPL opts.yaml of the training run.",
)
@click.option("--top-m", default=20, show_default=True, help="Candidates mined per query (m of Eq. 1-2).")
@click.option("--splits", default="train,test", show_default=True, help="Comma-separated splits to build.")
@click.option(
    "--protocol",
    default="official",
    show_default=True,
    type=click.Choice(["official", "query-ids-only"]),
    help="Gallery protocol: every gallery image (official) or only query IDs (Sample4Geo's junk rule).",
)
@click.option(
    "--index", default="exact", show_default=True, type=click.Choice(["exact", "ivf", "hnsw"]),
    help="Search index. exact is the paper's setting; ivf/hnsw for galleries of millions (recall measured).",
)
@click.option(
    "--with-images/--ids-only", default=None, help="Embed image bytes (default: only if the licence allows)."
)
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (default skyrank-<dataset>).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option(
    "--embeddings/--no-embeddings", default=None,
    help="Also write embeddings-<retriever>-<bench> (for `skyrank remine`; default: on for synthetic only).",
)
@click.option(
    "--embedding-dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16"]),
    help="Storage dtype of the embeddings (float32: remine reproduces the rows exactly).",
)
@_device_option
@click.option("--batch-size", default=32, show_default=True)
@click.option("--num-workers", default=0, show_default=True, help="DataLoader workers for image decoding.")
@click.option(
    "--skip-bad-images", is_flag=True, help="Leave out images that fail to decode (listed in the summary and card)."
)
@click.option(
    "--random-weights", is_flag=True,
    help="Allow a retriever without --checkpoint (untrained weights; the card says so in bold). For pipeline tests.",
)
@click.option(
    "--max-pixels", type=int,
    help="Decode budget per image in pixels (default 64,000,000); larger JPEGs are reduced on decode, others refused.",
)
@click.option(
    "--num-processes", default=1, show_default=True,
    help="Encode with N local processes (gloo on CPU, one GPU each on CUDA); omit under `accelerate launch`.",
)
@click.option(
    "--json", "json_out", type=click.Path(path_type=Path, allow_dash=True),
    help="Also write the build report (with --dry-run: the plan) as JSON; - for standard output.",
)
@click.option(
    "--dry-run", is_flag=True,
    help="Print the plan (counts, images to encode, configs with rows and sizes, disk, checks) and exit: nothing is "
    "decoded and no model is loaded.",
)
@_quiet_option
@_handle_errors
def build(splits: str, quiet: bool, json_out: Path | None, dry_run: bool, **kw: Any) -> None:
    """Mine a SkyRank re-ranking dataset from a benchmark and a retriever, write it as Parquet and validate it."""
    from skyrank.build import build_dataset, plan_build, report_to_json

    kw.update(splits=tuple(s.strip() for s in splits.split(",") if s.strip()), progress=not quiet)
    if dry_run:
        result: Any = plan_build(**kw)
        to_json = result.to_json
    else:
        result = build_dataset(**kw)  # --device unset: resolved after the checks (torch loads only then)
        if result is None:  # a process other than rank 0 of `accelerate launch`: rank 0 writes and prints
            return
        to_json = functools.partial(report_to_json, result)
    if str(json_out) == "-":
        click.echo(to_json())
        return
    click.echo(result.summary())
    if json_out:
        json_out.write_text(to_json())


# ------------------------------------------------------------------------------------------------------- synth
SYNTH_EXAMPLES = """
\b
Examples:
  skyrank synth --out /tmp/syn
  skyrank synth --out /tmp/syn-sues --layout sues200 --locations 20 --views 10
  skyrank synth --out /tmp/syn-vigor --layout vigor      (also cvusa, cvact, denseuav, u1652-street)
"""


@main.command(epilog=SYNTH_EXAMPLES)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write the benchmark into.")
@click.option(
    "--layout",
    default="university1652",
    show_default=True,
    type=click.Choice(["university1652", "sues200", "sues200-split", "sues200-lower", "vigor", "cvusa", "cvact",
                       "denseuav", "u1652-street"]),
)
@click.option("--locations", type=int, help="Locations per split (train and test each).")
@click.option("--distractors", type=int, help="Extra gallery-only locations in the test split.")
@click.option("--views", type=int, help="Drone views per location.")
@click.option("--image-size", type=int, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True)
@_quiet_option
@_handle_errors
def synth(out: Path, layout: str, quiet: bool, **kw: Any) -> None:
    """Generate the procedural cross-view benchmark in a real benchmark layout."""
    from skyrank.benchmarks.synthetic import build_command, generate_synthetic

    params = {k: v for k, v in kw.items() if v is not None}
    root = generate_synthetic(out, layout=layout, progress=not quiet, **params)
    click.echo(f"synthetic benchmark written to {root}")
    click.echo(f"build from it with: {build_command(root, layout)}")


# ---------------------------------------------------------------------------------------------------- validate
VALIDATE_EXAMPLES = """
\b
Examples:
  skyrank validate skyrank-synthetic/
"""


@main.command(epilog=VALIDATE_EXAMPLES)
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_handle_errors
def validate(folder: Path) -> None:
    """Load every config and split of a SkyRank folder with `datasets` and check the schema and invariants."""
    from skyrank.validate import validate_dataset

    report = validate_dataset(folder)
    click.echo(f"{folder}: valid SkyRank dataset")
    for (cfg, split), n in sorted(report.rows.items()):
        click.echo(f"  {cfg:<44} {split:<6} {n:>7} rows")
    for warning in report.warnings:
        click.secho(f"warning: {warning}", fg="yellow")
    for note in report.notes:
        click.echo(f"note: {note}")


# ------------------------------------------------------------------------------------------------------ remine
REMINE_EXAMPLES = """
\b
Examples:
  skyrank remine skyrank-synthetic --retriever-config sample4geo-synthetic-d2s --top-m 30
  skyrank remine skyrank/ --retriever-config sample4geo-university1652-d2s --top-m 50 --out skyrank-m50/
"""


@main.command(epilog=REMINE_EXAMPLES)
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--retriever-config", required=True, help="The retriever config to re-mine (its queries and direction).")
@click.option("--top-m", type=int, help="m of Eq. 1-2 (default: the config's). Another m writes <config>-m<m>.")
@click.option("--out", type=click.Path(path_type=Path), help="Write a new folder (default: update FOLDER in place).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@click.option("--index", default="exact", show_default=True, type=click.Choice(["exact", "ivf", "hnsw"]))
@_quiet_option
@_handle_errors
def remine(folder: Path, quiet: bool, retriever_config: str, **kw: Any) -> None:
    """Rebuild a retriever config from the folder's embeddings config, without running a retriever."""
    from skyrank.embeddings import remine as remine_fn

    result = remine_fn(folder, retriever_config, progress=not quiet, **kw)
    click.echo(f"{result['config']} (m = {result['m']}) written to {result['out']}")
    for s in result["stats"]:
        click.echo(
            f"  {s['split']:<6} {s['rows']:>7} queries  GT@m {s['gt_in_top_m']:6.2f}  R@1 {s['R@1']:6.2f}  "
            f"R@5 {s['R@5']:6.2f}  R@10 {s['R@10']:6.2f}  AP {s['AP']:6.2f}"
        )


# ------------------------------------------------------------------------------------------------------ export
EXPORT_EXAMPLES = """
\b
Examples:
  skyrank export skyrank-synthetic --format mteb --out skyrank-synthetic-mteb
  skyrank export skyrank/ --format mteb --config sample4geo-university1652-d2s --out mteb/
  skyrank export skyrank/ --format mteb --images-root /data/University-Release --out mteb-private/
"""


@main.command(epilog=EXPORT_EXAMPLES)
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--format", "fmt", default="mteb", show_default=True, type=click.Choice(["mteb"]))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write the export into.")
@click.option("--config", "configs", multiple=True, help="Retriever config(s) to export (default: all). Repeatable.")
@click.option("--overwrite", is_flag=True, help="Replace an existing export at --out.")
@click.option("--images-root", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Embed images from your copy of the benchmark (keep licensed exports private).")
@_handle_errors
def export(folder: Path, fmt: str, out: Path, configs: tuple[str, ...], overwrite: bool,
           images_root: Path | None) -> None:
    """Write a SkyRank folder in the MTEB/BEIR re-ranking layout (corpus, queries, qrels, top_ranked per config)."""
    from skyrank.export import export_dataset

    result = export_dataset(folder, out, format=fmt, configs=list(configs) or None, overwrite=overwrite,
                            images_root=images_root)
    click.echo(f"MTEB layout written to {result['out']} (subsets: {', '.join(result['subsets'])})")
    for (cfg, split), n in sorted(result["tables"].items()):
        click.echo(f"  {cfg:<52} {split:<6} {n:>7} rows")


# --------------------------------------------------------------------------------------------------- retriever
@main.group(epilog="""
\b
Examples:
  skyrank retriever list
  skyrank retriever train --out runs/atto
""")
def retriever() -> None:
    """Retriever utilities: list the registry, train a retriever."""


@retriever.command("list", epilog="\b\nExample:\n  skyrank retriever list")
def retriever_list() -> None:
    """List the registered retrievers."""
    from skyrank.retrievers import list_retrievers

    for name in list_retrievers():
        click.echo(name)


@retriever.command("train", epilog="""
\b
Examples:
  skyrank retriever train --out runs/atto --epochs 5
  skyrank retriever train --dataset university1652 --root /data/University-Release --arch mccg --out runs/mccg
""")
@click.option("--dataset", default="synthetic", show_default=True)
@click.option("--root", type=click.Path(path_type=Path), help="Benchmark root (default for synthetic: cached).")
@click.option("--altitude", help="SUES-200 altitude.")
@click.option(
    "--arch", default="convnext_atto", show_default=True,
    help="mccg, sdpl, sample4geo (= convnext_base.fb_in22k_ft_in1k_384) or any timm ConvNeXt name.",
)
@click.option("--image-size", type=int, help="Input size (default per architecture: 384, 256, 512; 128 for others).")
@click.option("--block", type=int, help="MCCG blocks (1 or 2).")
@click.option("--init-checkpoint", type=click.Path(path_type=Path, exists=True), help="Start from these weights.")
@click.option("--epochs", type=int, help="Epochs (Sample4Geo uses 1 on University-1652).")
@click.option("--batch-size", type=int, help="Classes per batch (one drone/satellite pair per class).")
@click.option("--lr", type=float, help="AdamW learning rate.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--resume", is_flag=True, help="Continue from the last epoch checkpoint in --out.")
@click.option("--seed", default=0, show_default=True)
@_device_option
@click.option("--num-workers", default=0, show_default=True)
@_quiet_option
@_handle_errors
def retriever_train(dataset: str, root: Path | None, device: str | None, quiet: bool, **kw: Any) -> None:
    """Train a retriever with Sample4Geo's recipe (symmetric InfoNCE, one pair per class per batch)."""
    from skyrank.retrievers.train import load_with, train_retriever

    params = {k: v for k, v in kw.items() if v is not None}
    ckpt = train_retriever(dataset, root, device=_resolve_device(device), progress=not quiet, **params)
    click.echo(f"checkpoint written to {ckpt}")
    if load_with(ckpt):
        click.echo(f"load it with: {load_with(ckpt)}")


# ----------------------------------------------------------------------------------------------------- publish
def _hub_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--endpoint", help="Hub endpoint URL (default https://huggingface.co).")(fn)
    fn = click.option("--token", envvar="HF_TOKEN", show_envvar=True, help="Hub token (never printed).")(fn)
    fn = click.option("--dry-run", is_flag=True, help="Validate and print the plan; write nothing.")(fn)
    fn = click.option("--private", is_flag=True, help="Create the repo private.")(fn)
    fn = click.option("--repo-id", required=True, help="owner/name on the Hub.")(fn)
    return fn


PUBLISH_EXAMPLES = """
\b
Examples:
  skyrank publish skyrank/ --repo-id alice/skyrank --dry-run
  skyrank publish skyrank/ --repo-id alice/skyrank --tag v1.0
  skyrank publish skyrank-synthetic/ --repo-id alice/skyrank --create-pr
"""


@main.command(epilog=PUBLISH_EXAMPLES)
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_hub_options
@click.option("--gated", is_flag=True, help="Require manual approval to access the repo.")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to the branch.")
@click.option("--revision", help="Branch to commit to (created when missing).")
@click.option("--tag", help="Tag the published commit, e.g. v1.0.")
@click.option(
    "--i-have-permission-to-redistribute",
    "acknowledge_license",
    is_flag=True,
    help="Acknowledge the benchmark licence when publishing its images to a private or gated repo.",
)
@click.option("--commit-message")
@_quiet_option
@_handle_errors
def publish(folder: Path, quiet: bool, **kw: Any) -> None:
    """Validate a SkyRank folder and publish it to a Hugging Face Hub dataset repo in one commit."""
    from skyrank.publish import publish_dataset

    report = publish_dataset(folder, progress=not quiet, **kw)
    if quiet:
        click.echo(report.format_plan())
    if report.commit_url:
        click.echo(f"published: {report.commit_url}")
    if report.pr_url:
        click.echo(f"pull request: {report.pr_url}")


@main.command("publish-model", epilog="""
\b
Examples:
  skyrank publish-model runs/skylink --repo-id alice/skylink --dry-run
  skyrank publish-model runs/skylink --repo-id alice/skylink --training-data alice/skyrank
""")
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_hub_options
@click.option("--training-data", help="The SkyRank repo/config the model was trained on (for the card).")
@_quiet_option
@_handle_errors
def publish_model_cmd(run_dir: Path, quiet: bool, **kw: Any) -> None:
    """Publish a SkyLink run (LoRA adapter + value head + config) with a model card."""
    from skylink_model.publish_model import publish_model
    from skyrank.benchmarks import benchmark_citation

    report = publish_model(run_dir, progress=not quiet, benchmark_citation=benchmark_citation, **kw)
    if quiet:
        click.echo(report.format_plan())
    if report.commit_url:
        click.echo(f"published: {report.commit_url}")


# ------------------------------------------------------------------------------------------------ SkyLink model
def _check_data(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--data: an existing folder, or something shaped like a Hub repo id (checked before any model loads)."""
    from skyrank.hub_limits import looks_like_repo_id

    if value is not None and not Path(value).expanduser().is_dir():
        if Path(value).expanduser().exists():
            raise click.BadParameter(f"{value} is a file; pass the folder `skyrank build` wrote, or a Hub repo id")
        if not looks_like_repo_id(value):
            raise click.BadParameter(
                f"{value} does not exist; pass a SkyRank folder (the --out of `skyrank build`) or a Hub dataset repo "
                "id (owner/name)"
            )
    return value


def _check_config(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--config: a retriever config name (<retriever>-<bench>[-<alt>]-<d2s|s2d>), checked before any model loads."""
    from skylink_model.data import parse_retriever_config

    try:
        parse_retriever_config(value)
    except ValueError as e:
        raise click.BadParameter(f"{e} (the dataset card lists its configs)") from None
    return value


def _data_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--images-root", type=click.Path(path_type=Path, exists=True, file_okay=False),
        help="Your benchmark copy, when the dataset holds ids only (University-1652, SUES-200).",
    )(fn)  # fmt: skip
    fn = click.option(
        "--config", "data_config", required=True, callback=_check_config,
        help="Retriever config, e.g. sample4geo-university1652-d2s.",
    )(fn)  # fmt: skip
    fn = click.option(
        "--data", required=True, callback=_check_data, help="SkyRank folder or Hub dataset repo id."
    )(fn)
    return fn


def _plan_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--plan`` and the assumptions it needs that a run does not (train and eval)."""
    fn = click.option("--plan-utilisation", type=float,
                      help="--plan: fraction of the GPUs' bf16 peak sustained (default 0.40, the paper's 13 h).")(fn)
    fn = click.option("--plan-image-size", type=int, default=384, show_default=True,
                      help="--plan: side of the (square) images, in pixels.")(fn)  # fmt: skip
    fn = click.option("--plan", is_flag=True,
                      help="Print the memory and time plan of this run (read from the base model's config only: a "
                      "local folder, the Hub, or the built-in published configs offline) and exit.")(fn)  # fmt: skip
    return fn


def _plan_dtype(dtype: str | None) -> str:
    """The plan's precision for --dtype (auto: bf16, as on a GPU)."""
    return "bfloat16" if dtype in (None, "auto") else dtype


TRAIN_EXAMPLES = """
\b
Examples:
  skyrank train --data alice/skyrank --config sample4geo-university1652-d2s \\
      --model Qwen/Qwen2-VL-7B-Instruct --images-root /data/University-Release --out runs/skylink
  accelerate launch --config_file skylink_model/accelerate_configs/deepspeed_zero2.yaml --num_processes 2 \\
      cli.py train --data alice/skyrank --config sample4geo-university1652-d2s --batch-size 4 --out runs/skylink
  skyrank train ... --no-lora-vision --head-init zero --lora-dropout 0.1   # ablations (paper values: defaults)

--batch-size is groups per optimizer step in TOTAL: on 2 processes, 4 = 1 per device x 2 accumulation x 2.
"""


#: `skyrank train --loss` (skylink_model.losses.LOSSES, kept here so `--help` does not import torch; a test compares).
TRAIN_LOSSES = ["bce", "plackett-luce"]


@main.command(epilog=TRAIN_EXAMPLES)
@_data_options
@click.option(
    "--model", "base_model", default="Qwen/Qwen2-VL-7B-Instruct", show_default=True, help="Hub id or local folder."
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Run folder (required unless --plan).")
@click.option("--k", type=int, help="Candidates per group |G_z| (Eq. 3; paper 13).")
@click.option("--threshold", type=float, help="Soft-label threshold T (Eq. 7; paper 0.9).")
@click.option("--labels", type=click.Choice(["soft", "hard", "gt-only"]), help="Label ablation (paper: soft).")
@click.option(
    "--loss", type=click.Choice(TRAIN_LOSSES),
    help="bce: the paper's soft-label BCE (Eq. 8, default); plackett-luce: GeoRanker's listwise loss, ground truth "
    "first.",
)  # fmt: skip
@click.option("--lr", "learning_rate", type=float, help="AdamW learning rate (paper 1e-4).")
@click.option(
    "--batch-size", type=int,
    help="Groups per optimizer step in total, over all processes (paper 4 on 2 GPUs); must divide by the count.",
)  # fmt: skip
@click.option("--epochs", type=int, help="Epochs (paper 1).")
@click.option("--lora-r", type=int, help="LoRA rank (paper 16).")
@click.option("--lora-alpha", type=int, help="LoRA alpha (paper 32).")
@click.option("--lora-dropout", type=float, help="LoRA dropout (paper 0.05).")
@click.option("--lora-targets", help="Comma-separated layer names (paper: q_proj,k_proj,v_proj + vision tower).")
@click.option(
    "--lora-vision/--no-lora-vision", default=None, help="LoRA on the vision tower too (paper: yes; ablation: no)."
)
@click.option(
    "--head-init", type=click.Choice(["yes-no", "zero", "random"]),
    help="Value-head init: lm_head[yes]-lm_head[no] (default), zero or random (the paper states none).",
)  # fmt: skip
@click.option("--prompt", help="Text between the query and candidate images (paper: 'Does the given query image "
              "match the following reference image?'; street-view queries get the views named; 'views' names "
              "them for every benchmark).")  # fmt: skip
@click.option("--warmup-ratio", type=float, help="Linear warm-up fraction of the steps (paper: not stated; 0.03).")
@click.option(
    "--lr-scheduler", type=click.Choice(["linear", "cosine", "constant"]),
    help="Decay after warm-up (paper: not stated; linear).",
)  # fmt: skip
@click.option("--weight-decay", type=float, help="AdamW weight decay (paper: not stated; 0).")
@click.option("--max-grad-norm", type=float, help="Gradient clipping norm (default 1.0).")
@click.option("--train-fraction", type=float, help="Train on this fraction of the queries (data-efficiency study).")
@click.option(
    "--val-fraction",
    type=float,
    help="Hold this fraction of the training queries (whole locations) out of training, for `skyrank eval --fuse "
    "auto` (default 0: the paper trains on all).",
)
@click.option("--dtype", help="auto (bf16 on GPU), bfloat16, float16 or float32.")
@click.option("--attn-implementation", help="e.g. flash_attention_2 or sdpa.")
@click.option("--gradient-checkpointing", is_flag=True, default=None)
@click.option("--min-pixels", type=int, help="Image budget: minimum pixels per image.")
@click.option("--max-pixels", type=int, help="Image budget: maximum pixels per image.")
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--micro-batch-size", type=int, help="Split each group's k pairs into micro-batches of this size.")
@click.option("--no-shared-prefix", "shared_prefix", is_flag=True, flag_value=False, default=True,
              help="Run every (query, candidate) pair in full instead of one shared prefix per group.")
@click.option("--save-every", type=int, help="Checkpoint every N optimizer steps.")
@click.option("--log-every", default=10, show_default=True, help="Optimizer steps between log lines.")
@click.option(
    "--mixed-precision", default="auto", show_default=True, type=click.Choice(["auto", "no", "bf16", "fp16"]),
    help="auto: bf16 on a bf16 GPU (paper), else none. Under DeepSpeed the whole module is cast to it.",
)  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
@click.option("--seed", type=int, default=0, show_default=True)
@_plan_options
@click.option("--plan-gpus", type=click.IntRange(min=1), default=1, show_default=True, help="--plan: GPUs.")
@click.option("--plan-zero-stage", type=click.Choice(["0", "2"]), default="0", show_default=True,
              help="--plan: DeepSpeed ZeRO stage (2 shards gradients and optimizer state).")
@_device_option
@_quiet_option
@_handle_errors
def train(data: str, data_config: str, images_root: Path | None, out_dir: Path | None, max_steps: int | None,
          micro_batch_size: int | None, save_every: int | None, log_every: int, mixed_precision: str, resume: bool,
          seed: int, device: str | None, quiet: bool, shared_prefix: bool, plan: bool, plan_image_size: int,
          plan_utilisation: float | None, plan_gpus: int, plan_zero_stage: str, **cfg: Any) -> None:  # fmt: skip
    """Train the SkyLink LoRA re-ranker on a SkyRank retriever config (defaults: the paper's)."""
    if plan:  # the memory and time plan from the base model's config alone, before any work
        from skylink_model.plan import plan_run

        options = {"k": cfg["k"], "batch_size": cfg["batch_size"], "num_gpus": plan_gpus,
                   "zero_stage": int(plan_zero_stage), "dtype": _plan_dtype(cfg["dtype"]),
                   "image_size": plan_image_size, "min_pixels": cfg["min_pixels"], "max_pixels": cfg["max_pixels"],
                   "gradient_checkpointing": bool(cfg["gradient_checkpointing"]), "shared_prefix": shared_prefix,
                   "micro_batch_size": micro_batch_size, "lora_r": cfg["lora_r"], "lora_targets": cfg["lora_targets"],
                   "lora_vision": cfg["lora_vision"], "utilisation": plan_utilisation,
                   "train_fraction": cfg["train_fraction"], "device": _plan_device(device)}  # fmt: skip
        click.echo(plan_run("train", cfg["base_model"], data, data_config, **options).format())
        return
    if out_dir is None:
        raise click.UsageError("Missing option '--out' (the run folder; only --plan runs without it).")
    from skylink_model.config import SkyLinkConfig
    from skylink_model.train import train_skylink

    config = SkyLinkConfig(**{k: v for k, v in cfg.items() if v is not None}, seed=seed)
    result = train_skylink(
        config, data, data_config, out_dir=out_dir, images_root=images_root, max_steps=max_steps,
        micro_batch_size=micro_batch_size, save_every=save_every, log_every=log_every, resume=resume, seed=seed,
        device=_lvlm_device(device), progress=not quiet, shared_prefix=shared_prefix,
        mixed_precision=mixed_precision,
    )  # fmt: skip
    click.echo(f"trained {result.steps} steps in {result.wall_time_s:.0f}s; final loss {result.final_loss:.4f}")
    click.echo(f"adapter, value head and config saved to {result.out_dir}")


def _check_adapter(ctx: click.Context | None, param: click.Parameter | None, adapter: str | None) -> str | None:
    """--adapter: a SkyLink run folder (with adapter_config.json) or something shaped like a Hub repo id."""
    from skyrank.hub_limits import looks_like_repo_id

    if adapter is None:
        return None
    if Path(adapter).is_dir():
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise click.BadParameter(
                f"{adapter} is not a SkyLink run folder (no adapter_config.json); pass the --out of `skyrank train`",
                param_hint="'--adapter'",
            )
    elif not looks_like_repo_id(adapter):
        raise click.BadParameter(
            f"{adapter} does not exist; pass the --out folder of `skyrank train` or a Hub model repo id (owner/name)",
            param_hint="'--adapter'",
        )
    return adapter


def _local_run(adapter: str) -> Path:
    """A run folder on disk: ``adapter`` itself, or its Hub snapshot."""
    _check_adapter(None, None, adapter)
    if Path(adapter).is_dir():
        return Path(adapter)
    from skylink_model.evaluation import local_run

    return local_run(adapter)  # a Hub error named with its fix


RERANK_EXAMPLES = """
\b
Examples:
  skyrank rerank --adapter runs/skylink --candidates retrieved.csv --out reranked.csv
  skyrank rerank --adapter alice/skylink-u1652 --candidates top20.parquet --images-root /data/University-Release \\
      --top-k 10 --out reranked.parquet
\b
Input: one row per (query, candidate) pair with columns query, candidate [, score | rank], or (Parquet) one row
per query with query and candidates (a list of paths in retriever order).
"""


@main.command(epilog=RERANK_EXAMPLES)
@click.option("--adapter", required=True, help="SkyLink run folder or Hub model repo id.")
@click.option("--candidates", required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Parquet/CSV of query and candidate image paths (another tool's retrieval output).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Output .parquet/.csv (default <input>.reranked.parquet).")
@click.option("--images-root", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Folder relative paths are resolved under (default: the candidates file's folder).")
@click.option("--top-k", type=int, help="Re-rank only each list's first k (default: all).")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--no-shared-prefix", "naive", is_flag=True, help="Score every pair in full (as `skyrank eval` can).")
@_device_option
@_quiet_option
@_handle_errors
def rerank(adapter: str, device: str | None, quiet: bool, naive: bool, **kw: Any) -> None:
    """Re-rank candidate lists from any retriever with a trained SkyLink; writes scores and the new order."""
    from skylink_model.model import SkyLinkModel
    from skylink_model.rerank_lists import rerank_file

    def model() -> SkyLinkModel:  # loaded once the candidates file has been read (a bad file is reported first)
        return SkyLinkModel.from_pretrained(_local_run(adapter), device=_lvlm_device(device))

    result = rerank_file(model, shared_prefix=not naive, progress=not quiet, **kw)
    click.echo(f"{result.queries} queries, {result.scored} pairs scored ({result.ms_per_query:.1f} ms/query): "
               f"{result.out}")


EXPORT_MODEL_EXAMPLES = """
\b
Examples:
  skyrank export-model runs/skylink --format vllm --out served/skylink
  skyrank export-model alice/skylink-u1652 --format vllm --dtype bfloat16 --out served/skylink
  vllm serve served/skylink --runner pooling --convert classify
"""


@main.command("export-model", epilog=EXPORT_MODEL_EXAMPLES)
@click.argument("run")
@click.option("--format", "fmt", default="vllm", show_default=True, type=click.Choice(["vllm"]))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write the merged model into.")
@click.option("--base-model", help="Base model (default: the run's).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), help="Merged weights' dtype.")
@click.option("--overwrite", is_flag=True, help="Replace an existing export at --out.")
@_handle_errors
def export_model(run: str, fmt: str, out: Path, **kw: Any) -> None:
    """Merge a SkyLink run (LoRA of both towers + value head as `score`) for `vllm serve --convert classify`."""
    from skylink_model.serving import export_vllm

    folder = export_vllm(_local_run(run), out, **kw)
    click.echo(f"merged SkyLink model written to {folder}; serve it with:")
    click.echo(f"  vllm serve {folder} --runner pooling --convert classify")


EVAL_EXAMPLES = """
\b
Examples:
  skyrank eval --data alice/skyrank --config sample4geo-university1652-d2s      # the retriever row alone
  skyrank eval --data alice/skyrank --config sample4geo-university1652-d2s --adapter runs/skylink \\
      --images-root /data/University-Release --top-k 10 --json eval.json      # + SkyLink, + SkyLink fused
  skyrank eval --data skyrank-demo/dataset --config sample4geo-synthetic-d2s --adapter skyrank-demo/run \\
      --fuse 1.5 --ap precision --baseline prompt
  skyrank eval --data skyrank-demo/dataset --config sample4geo-synthetic-d2s --adapter skyrank-demo/run \\
      --json eval.json --per-query eval.per_query.jsonl
"""


@main.command("eval", epilog=EVAL_EXAMPLES)
@_data_options
@click.option(
    "--adapter", callback=_check_adapter,
    help="SkyLink run folder or Hub model repo id; without it only the retriever row.",
)
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test"]))
@click.option("--top-k", default=10, show_default=True, help="Re-rank the retriever's top-k.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--max-queries", type=int, help="Evaluate only the first N queries (quick checks).")
@click.option("--baseline", type=click.Choice(["prompt"]), help="Also evaluate the listwise prompt baseline (A.8).")
@click.option(
    "--ap",
    "ap",
    type=click.Choice(["market1501", "precision"]),
    multiple=True,
    help="AP definition(s) to report: market1501 (the evaluators' trapezoid: AP, AP_topk_market1501) and/or "
    "precision (SkyLink Table 1's: AP_precision, AP_conservative). Default: both, as named columns.",
)
@click.option(
    "--fuse",
    default="auto",
    show_default=True,
    help="Fused row z(S) + W z(retriever): 'auto' (W chosen on the run's validation queries, see train "
    "--val-fraction), 'none', or a weight W.",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the report as JSON.")
@click.option(
    "--per-query", "per_query_path", type=click.Path(path_type=Path),
    help="Write per-query scores and orders (JSON Lines) for `skyrank show` and `skyrank sweep`.",
)
@click.option("--no-shared-prefix", "shared_prefix", is_flag=True, flag_value=False, default=True,
              help="Score every (query, candidate) pair in full instead of on the query's shared prefix.")
@click.option("--feature-cache-mb", type=float, default=1024, show_default=True,
              help="Memory bound of the gallery vision-feature cache (LRU; Qwen2-VL-7B at 384 px in bf16 keeps "
                   "1.4 MB per image); 0 turns it off.")
@_plan_options
@click.option("--plan-model", help="--plan: base model when --adapter is not a local run folder "
              "(default Qwen/Qwen2-VL-7B-Instruct).")
@_device_option
@_quiet_option
@_handle_errors
def eval_cmd(data: str, data_config: str, images_root: Path | None, adapter: str | None, device: str | None,
             quiet: bool, ap: tuple[str, ...], plan: bool, plan_image_size: int, plan_utilisation: float | None,
             plan_model: str | None, **kw: Any) -> None:  # fmt: skip
    """Print the paper's Table-1 rows: retriever, +SkyLink, +SkyLink fused and the gains (JSON with --json)."""
    if plan:  # scoring memory and time from the base model's config alone, before any work
        from skylink_model.plan import eval_base_model, plan_run

        base, min_pixels, max_pixels = eval_base_model(adapter)
        options = {"k": kw["top_k"], "dtype": "bfloat16", "image_size": plan_image_size, "min_pixels": min_pixels,
                   "max_pixels": max_pixels, "shared_prefix": kw["shared_prefix"],
                   "feature_cache_mb": kw["feature_cache_mb"], "utilisation": plan_utilisation,
                   "device": _plan_device(device)}  # fmt: skip
        click.echo(plan_run("eval", plan_model or base, data, data_config, **options).format())
        return
    from skylink_model.evaluation import evaluate_run

    report = evaluate_run(
        adapter, data, data_config, images_root=images_root, device=_lvlm_device(device), progress=not quiet,
        ap=ap or None, **kw,
    )  # fmt: skip
    click.echo(report.format_table())
    for key, name in (("skylink_ms_per_query", "SkyLink"), ("prompt_ms_per_query", "prompt baseline")):
        if key in report.extra:
            click.echo(f"{name}: {report.extra[key]:.1f} ms/query")


DEMO_EXAMPLES = """
\b
Examples:
  skyrank demo                                   # build, pre-train, train 3,000 steps, evaluate (CPU)
  skyrank demo --out /tmp/demo --max-steps 1500   # a shorter run (SkyLink alone learns less)
  skyrank demo --out /tmp/demo-random --pretrain-steps 0   # the ablation: SkyLink on a random backbone
"""


@main.command(epilog=DEMO_EXAMPLES)
@click.option("--out", default="skyrank-demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--max-steps", type=int, help="SkyLink's training budget in optimizer steps (default: the demo's).")
@click.option("--labels", type=click.Choice(["soft", "hard", "gt-only"]), help="Label mode (default: the demo's).")
@click.option(
    "--pretrain-steps",
    type=click.IntRange(min=0),
    help="Contrastive pre-training steps of the tiny backbone's vision tower before SkyLink's training "
    "(default: the demo's; 0 trains SkyLink on the random backbone).",
)
@click.option("--overwrite", is_flag=True, help="Rebuild and retrain instead of reusing what is under --out.")
@click.option("--no-leaderboard", "leaderboard", is_flag=True, flag_value=False, default=True,
              help="Skip the Plackett-Luce run and the leaderboard (retriever, SkyLink BCE/PL, fused, zero-shot).")
@_quiet_option
@_handle_errors
def demo(
    out: Path, max_steps: int | None, labels: str | None, pretrain_steps: int | None, overwrite: bool, quiet: bool,
    leaderboard: bool = True,
) -> None:
    """The whole method on CPU: build the synthetic SkyRank, pre-train and train a tiny SkyLink, evaluate."""
    from skyrank.demo import run_demo

    result = run_demo(
        out, max_steps=max_steps, labels=labels, pretrain_steps=pretrain_steps, overwrite=overwrite,
        progress=not quiet, leaderboard=leaderboard,
    )  # fmt: skip
    click.echo(result.table)
    if result.leaderboard is not None:
        click.echo(result.leaderboard_markdown)
    click.echo(result.summary())
    click.echo(f"dataset: {result.dataset}\nrun: {result.run}\nevaluation: {result.eval_json}")
    if result.leaderboard is not None:
        click.echo(f"leaderboard: {result.leaderboard}")
    if result.report_html is not None:
        click.echo(f"report: {result.report_html}")


# ------------------------------------------------------------------------------------------- tables and figures
TABLE_EXAMPLES = """
\b
Examples:
  skyrank table evals/*.json
  skyrank table evals/sample4geo-*.json evals/mccg-*.json --format latex --out table1.tex
  skyrank table evals/*.json --metrics R@1,R@5,AP,AP_conservative --format csv
  skyrank table sweeps/labels sweeps-sues150/labels --format latex     # an ablation table (Table 2)
"""


@main.command(epilog=TABLE_EXAMPLES)
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", default="markdown", show_default=True, type=click.Choice(["markdown", "latex", "csv", "html"])
)
@click.option("--metrics", default=None,
              help="Comma-separated metrics per column group [default: each benchmark's own: R@1,AP for "
                   "University-1652/SUES-200, R@1,R@5,R@10,R@top1%,Hit_Rate for VIGOR, ...].")
@click.option("--ci", is_flag=True, help="Add the 95% bootstrap intervals the JSONs hold (ci95).")
@click.option("--out", type=click.Path(path_type=Path), help="Write the table to this file instead of printing it.")
@_handle_errors
def table(runs: tuple[Path, ...], fmt: str, metrics: str, ci: bool, out: Path | None) -> None:
    """Lay out the paper's Table 1 from eval JSONs (rows per retriever, columns per benchmark/direction).

    A `skyrank sweep` folder among RUNS gives one +SkyLink row per swept value (the ablation tables).
    """
    from skylink_model.report.tables import format_table

    text = format_table(list(runs), fmt, metrics.split(",") if metrics else None, ci=ci)
    if out is None:
        click.echo(text, nl=False)
    else:
        from skylink_model.report._io import write_text_atomic

        click.echo(f"table written to {write_text_atomic(out, text)}")


SWEEP_EXAMPLES = """
\b
Examples:
  skyrank sweep --data skyrank-demo/dataset --config sample4geo-synthetic-d2s --run skyrank-demo/run \\
      --param top_k --values 1,2,3,5,10 --out sweeps/top_k
  skyrank sweep --data skyrank-demo/dataset --config sample4geo-synthetic-d2s --run skyrank-demo/run \\
      --param k --values 4,8,13 --max-steps 200 --out sweeps/group_size
  skyrank sweep --data skyrank-demo/dataset --config sample4geo-synthetic-d2s --run skyrank-demo/run \\
      --param seed --values 0,1,2 --max-steps 3000 --out sweeps/seeds      # the demo's spread over seeds
  skyrank sweep --data skyrank-demo/dataset --config sample4geo-synthetic-d2s --run skyrank-demo/run \\
      --param loss --values bce,plackett-luce --max-steps 3000 --out sweeps/loss
  skyrank sweep --data alice/skyrank --config sample4geo-university1652-d2s --run runs/skylink \\
      --images-root /data/University-Release --param train_fraction --values 0.1,0.25,0.5,1.0 --out sweeps/fraction
"""


@main.command(epilog=SWEEP_EXAMPLES)
@_data_options
@click.option("--param", required=True, type=click.Choice(["top_k", "k", "threshold", "labels", "train_fraction",
                                                           "base_model", "seed", "loss"]),
              help="The knob: top_k (no retraining), k (|G_z|), threshold (T), labels, train_fraction, base_model, "
                   "seed (the spread of one setting), loss (bce, plackett-luce).")
@click.option("--values", required=True, help="Comma-separated grid, e.g. 1,3,5,10.")
@click.option("--run", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Trained SkyLink run: evaluated (top_k) or the settings the other knobs vary.")
@click.option("--model", "base_model", help="Backbone for training sweeps without --run (paper defaults otherwise).")
@click.option("--split", default="test", show_default=True)
@click.option("--top-k", default=10, show_default=True, help="Re-ranked top-k of the training sweeps' evaluations.")
@click.option("--max-steps", type=int, help="Training sweeps: stop each run after this many optimizer steps.")
@click.option("--max-queries", type=int, help="Evaluate only the first N queries.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder of eval JSONs and plots.")
@click.option("--overwrite", is_flag=True, help="Redo points whose JSON already exists (default: reuse them).")
@_device_option
@_quiet_option
@_handle_errors
def sweep(data: str, data_config: str, images_root: Path | None, base_model: str | None, max_steps: int | None,
          device: str | None, quiet: bool, **kw: Any) -> None:  # fmt: skip
    """Run an ablation grid (SkyLink Figure 2/3a, Tables 2/6) into eval JSONs and one plot per swept knob."""
    from skylink_model.report.sweep import run_sweep

    base_config = None
    if base_model is not None:
        from skylink_model.config import SkyLinkConfig

        base_config = SkyLinkConfig(base_model=base_model)
    result = run_sweep(
        data=data, config=data_config, images_root=images_root, base_config=base_config,
        train_kwargs={"max_steps": max_steps} if max_steps else None, device=_lvlm_device(device),
        progress=not quiet, **kw,
    )  # fmt: skip
    click.echo(result.format_table())
    click.echo(f"plot: {result.plot}\nsummary: {result.summary}")


BENCH_EXAMPLES = """
\b
Examples:
  skyrank bench --data skyrank-demo/dataset --config sample4geo-synthetic-d2s --out bench/demo \\
      --reranker retriever --reranker skylink:skyrank-demo/run --reranker fused:skyrank-demo/run \\
      --reranker pointwise:skyrank-demo/run --reranker pairwise:skyrank-demo/run \\
      --reranker listwise:skyrank-demo/run --row-queries pairwise=128 --row-queries listwise=128
  skyrank bench --data alice/skyrank --config sample4geo-university1652-d2s --config sample4geo-sues200-150-d2s \\
      --images-root /data --reranker retriever --reranker skylink-pl=skylink:runs/pl \\
      --reranker pointwise:Qwen/Qwen2-VL-7B-Instruct --out bench/u1652
\b
--reranker [ROW=]KIND[:ARG], repeatable: retriever | skylink:RUN | fused:RUN (W on the run's validation queries) |
listwise:MODEL | pointwise:MODEL | pairwise:MODEL (all pairs) | pairwise-bubble:MODEL (one bubble pass). MODEL is a
Hub id, a model folder or a SkyLink run (its base model). An interrupted bench resumes from its finished rows.
"""


def _row_queries(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    caps: dict[str, int] = {}
    for value in values:
        row, _, n = value.partition("=")
        if not row.strip() or not n.strip().isdigit():
            raise click.BadParameter(f"{value!r}: give ROW=N, a row name and a whole number, e.g. pairwise=128")
        caps[row.strip()] = int(n)
    return caps


@main.command(epilog=BENCH_EXAMPLES)
@click.option("--data", required=True, callback=_check_data, help="SkyRank folder or Hub dataset repo id.")
@click.option("--config", "configs", required=True, multiple=True,
              callback=lambda ctx, param, values: tuple(_check_config(ctx, param, v) for v in values),
              help="Retriever config (repeatable), e.g. sample4geo-university1652-d2s.")  # fmt: skip
@click.option("--images-root", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Your benchmark copy, when the dataset holds ids only (University-1652, SUES-200).")
@click.option("--reranker", "rerankers", required=True, multiple=True,
              help="[ROW=]KIND[:ARG] (repeatable; see below).")
@click.option("--split", default="test", show_default=True)
@click.option("--top-k", default=10, show_default=True, help="Candidates re-ranked per query.")
@click.option("--max-queries", type=int, help="Evaluate only the first N queries of each config.")
@click.option("--row-queries", multiple=True, callback=_row_queries,
              help="ROW=N (repeatable): that row on the first N queries only, e.g. pairwise=128 for a cost figure.")
@click.option("--batch-size", default=16, show_default=True, help="Prompts per forward pass.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder of row files and the leaderboard.")
@click.option("--note", "notes", multiple=True, help="A line printed under the leaderboard (repeatable).")
@click.option("--overwrite", is_flag=True, help="Recompute rows whose file holds other settings.")
@_device_option
@_quiet_option
@_handle_errors
def bench(data: str, configs: tuple[str, ...], rerankers: tuple[str, ...], device: str | None, quiet: bool,
          notes: tuple[str, ...], **kw: Any) -> None:  # fmt: skip
    """Every re-ranker over every config: one leaderboard of R@1/5/10 and both APs (95% intervals) with the cost per
    query (LVLM calls, tokens, milliseconds on this device), as JSON, markdown and a plot."""
    from skylink_model.report.bench import run_bench

    result = run_bench(data, list(configs), list(rerankers), device=_lvlm_device(device), progress=not quiet,
                       notes=list(notes), **kw)  # fmt: skip
    click.echo(result.markdown, nl=False)
    click.echo(f"leaderboard: {result.json_path}\nmarkdown: {result.markdown_path}\nplot: {result.plot_path}")


SHOW_EXAMPLES = """
\b
Examples:
  skyrank show skyrank-demo/eval.json --out skyrank-demo/report
  skyrank show evals/*.json --queries 20 --worst --images-root /data/University-Release --out report/
  skyrank show evals/*.json --sweep sweeps/top_k --sweep sweeps/group_size --out report/
"""


@main.command(epilog=SHOW_EXAMPLES)
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for report.html and its PNGs.")
@click.option("--queries", default=8, show_default=True, help="Contact sheets per evaluation.")
@click.option("--worst", "select", flag_value="worst", help="Queries SkyLink moved down the most.")
@click.option("--best", "select", flag_value="best", help="Queries SkyLink moved up the most.")
@click.option("--data", help="Dataset folder or repo id (default: the one the evaluation JSON names).")
@click.option("--images-root", type=click.Path(path_type=Path), help="Your benchmark copy (ids-only datasets).")
@click.option("--sweep", "sweeps", multiple=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A `skyrank sweep` folder to add (repeatable).")
@click.option("--metrics", default=None, help="Metrics of the report's Table 1 [default: each benchmark's own].")
@_handle_errors
def show(runs: tuple[Path, ...], select: str | None, metrics: str, **kw: Any) -> None:
    """Contact sheets per query (query, ground truth, retriever vs SkyLink top-k) and a static report.html."""
    from skylink_model.report.page import write_report

    result = write_report(list(runs), select=select or "first", metrics=metrics.split(",") if metrics else None, **kw)
    click.echo(f"{len(result.sheets)} contact sheet(s), {len(result.figures)} figure(s)\nreport: {result.html}")


TINY_MODEL_EXAMPLES = """
\b
Examples:
  skyrank make-tiny-model tiny-qwen2-vl
  skyrank make-tiny-model tiny-llava --family llava_onevision
  skyrank train --data skyrank-demo/dataset --config sample4geo-synthetic-d2s --model tiny-llava --out runs/t --k 3
"""


@main.command("make-tiny-model", epilog=TINY_MODEL_EXAMPLES)
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--family", default="qwen2_vl", show_default=True,
    type=click.Choice(["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision"]),
    help="Backbone family (the model_type of Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision).",
)  # fmt: skip
@click.option("--seed", default=0, show_default=True)
@_handle_errors
def make_tiny_model(out: Path, family: str, seed: int) -> None:
    """Write a tiny random LVLM (model + processor + chat template) that loads like its hub checkpoint, offline."""
    from skylink_model.testing import make_tiny_model as build

    click.echo(f"tiny {family} model written to {build(out, family, seed=seed)}")


if __name__ == "__main__":  # pragma: no cover
    main()
