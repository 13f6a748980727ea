"""Every bad input of issue 9, through the real ``skyrank`` command: one table of (arguments → exit code → what the
message must name → the fix it must give), and no traceback without ``--debug``.

Each row runs the command in-process (click's runner) on tiny generated inputs: a 4-location synthetic benchmark,
a precomputed-embeddings retriever or a random ``convnext_atto``, and a SkyRank folder built from them.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cli
from skyrank import errors

ARCH = "convnext_atto"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class World:
    """The generated inputs every row can point at."""

    tmp: Path
    bench: Path  # synthetic University-1652 layout: test gallery of 4 tiles (3 test locations + 1 distractor)
    emb: Path  # precomputed embeddings of every image of ``bench``
    dataset: Path  # a SkyRank folder built from them
    s4g_nan: Path  # a convnext_atto Sample4Geo checkpoint with a NaN
    bad_yaml: Path
    bad_int_yaml: Path
    files: dict[str, Path] = field(default_factory=dict)


def _embeddings(bench: Path, out: Path) -> Path:
    ids = sorted(p.relative_to(bench).as_posix() for p in bench.rglob("*") if p.suffix in (".jpg", ".jpeg"))
    rng = np.random.default_rng(0)
    labels = [i.split("/")[-2] for i in ids]
    centers = {lab: rng.normal(size=8) for lab in sorted(set(labels))}
    emb = np.stack([centers[lab] + 0.3 * rng.normal(size=8) for lab in labels]).astype(np.float32)
    np.savez(out, embeddings=emb, ids=np.array(ids))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from skyrank.benchmarks.synthetic import generate_synthetic
    from skyrank.build import build_dataset
    from skyrank.retrievers import create

    tmp = tmp_path_factory.mktemp("cli-errors")
    bench = generate_synthetic(
        tmp / "bench", locations=3, test_locations=3, distractors=1, views=2, image_size=32, progress=False
    )
    emb = _embeddings(bench, tmp / "emb.npz")
    dataset = tmp / "ds"
    build_dataset(root=bench, retriever="precomputed", checkpoint=emb, top_m=3, out=dataset, progress=False)
    sd = create("sample4geo", arch=ARCH, image_size=32, random_weights=True).model.state_dict()
    first = next(k for k, v in sd.items() if v.is_floating_point())
    sd[first] = sd[first].clone()
    sd[first].view(-1)[0] = float("nan")
    torch.save(sd, tmp / "nan.pth")
    (tmp / "bad.yaml").write_text("h: [256\nw: 256\n")
    (tmp / "bad_int.yaml").write_text("h: two hundred\n")
    return World(tmp, bench, emb, dataset, tmp / "nan.pth", tmp / "bad.yaml", tmp / "bad_int.yaml")


@dataclass
class Case:
    """One bad input: ``args(world)`` → ``code``; ``names`` (the file/flag) and ``fix`` must appear in the output."""

    id: str
    args: Callable[[World], list[str]]
    code: int
    names: list[str]
    fix: str
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[World], None] | None = None
    not_in: list[str] = field(default_factory=list)
    teardown: Callable[[World], None] | None = None
    patch: Callable[[pytest.MonkeyPatch, World], None] | None = None  # a fault of the machine, injected


def _build(w: World, *extra: str, out: str = "out") -> list[str]:
    return ["build", "--root", str(w.bench), "--out", str(w.tmp / out), "--quiet", "--device", "cpu", "--splits",
            "test", "--top-m", "3", *extra]  # fmt: skip


def _precomputed(w: World) -> list[str]:
    return ["--retriever", "precomputed", "--checkpoint", str(w.emb)]


def _dangling(w: World) -> None:
    folder = next((w.bench / "test" / "query_drone").iterdir())
    link = folder / "zz-dangling.jpeg"
    if not link.is_symlink():
        os.symlink(w.tmp / "nowhere.jpeg", link)


def _undangle(w: World) -> None:
    for folder in (w.bench / "test" / "query_drone").iterdir():  # not glob: it skips a dangling link's literal name
        if (folder / "zz-dangling.jpeg").is_symlink():
            (folder / "zz-dangling.jpeg").unlink()


def _not_a_skyrank_folder(w: World) -> None:
    (w.tmp / "occupied").mkdir(exist_ok=True)
    (w.tmp / "occupied" / "notes.txt").write_text("mine")


CASES = [
    Case("mccg-without-weights", lambda w: _build(w, "--retriever", "mccg"), 5, ["mccg", "--checkpoint"],
         "--random-weights"),
    Case("sdpl-without-weights", lambda w: _build(w, "--retriever", "sdpl"), 5, ["sdpl", "--checkpoint"],
         "--random-weights"),
    Case("dangling-symlink", lambda w: _build(w, "--retriever", "sample4geo", "--arch", ARCH, "--image-size", "32",
                                              "--random-weights"), 4,
         ["zz-dangling.jpeg", "dangling symbolic link"], "--skip-bad-images", setup=_dangling, teardown=_undangle),
    Case("top-m-over-gallery", lambda w: _build(w, *_precomputed(w), "--top-m", "20"), 2, ["--top-m 20", "4 image"],
         "Pass --top-m 4 or less"),
    Case("unwritable-out", lambda w: ["build", "--root", str(w.bench), *_precomputed(w), "--out", "/proc/skyrank-out",
                                      "--quiet"], 6, ["/proc/skyrank-out", "not writable"], "--out"),
    Case("out-is-not-a-skyrank-folder", lambda w: _build(w, *_precomputed(w), "--overwrite", out="occupied"), 6,
         ["occupied", "not a SkyRank dataset"], "remove that folder yourself", setup=_not_a_skyrank_folder,
         not_in=["Pass --overwrite"]),
    Case("checkpoint-with-nan", lambda w: _build(w, "--checkpoint", str(w.s4g_nan), "--arch", ARCH, "--image-size",
                                                 "32"), 5, ["NaN", "nan.pth"], "another --checkpoint"),
    Case("root-missing-synthetic", lambda w: ["build", "--root", str(w.tmp / "no-bench"), "--quiet"], 3,
         ["--root", "no-bench", "does not exist"], "omit --root for the cached built-in one"),
    Case("root-missing-university1652", lambda w: ["build", "--dataset", "university1652", "--root",
                                                   str(w.tmp / "no-bench"), "--quiet"], 3,
         ["--root", "no-bench"], ".../University-Release", not_in=["SUES-200"]),
    Case("checkpoint-missing", lambda w: _build(w, "--checkpoint", str(w.tmp / "nope.pth")), 2,
         ["--checkpoint", "nope.pth", "does not exist"], "--checkpoint"),
    Case("opts-malformed-yaml", lambda w: _build(w, "--retriever", "mccg", "--random-weights", "--opts",
                                                 str(w.bad_yaml)), 2, ["--opts", "bad.yaml", "not valid YAML"],
         "opts.yaml"),
    Case("opts-non-integer", lambda w: _build(w, "--retriever", "sdpl", "--random-weights", "--opts",
                                              str(w.bad_int_yaml)), 2, ["bad_int.yaml", "'h'", "integer"], "Fix h:"),
    Case("eval-unknown-split", lambda w: ["eval", "--data", str(w.dataset), "--config", "precomputed-synthetic-d2s",
                                          "--split", "validation"], 2, ["--split",
                                                                                               "validation"], "test"),
    Case("train-malformed-config", lambda w: ["train", "--data", str(w.dataset), "--config", "nope-d2s", "--model",
                                              str(w.tmp / "m"), "--out", str(w.tmp / "run")], 2,
         ["nope-d2s", "--config"], "sample4geo-university1652-d2s"),
    Case("train-unknown-config", lambda w: ["train", "--data", str(w.dataset), "--config", "nope-synthetic-d2s",
                                            "--model", str(w.tmp / "m"), "--out", str(w.tmp / "run")], 2,
         ["nope-synthetic-d2s", "precomputed-synthetic-d2s"], "Pass --config"),
    Case("train-missing-data", lambda w: ["train", "--data", str(w.tmp / "no-such-folder"), "--config",
                                          "x-synthetic-d2s",
                                          "--model", str(w.tmp / "m"), "--out", str(w.tmp / "run")], 2,
         ["no-such-folder"], "--data"),
    Case("synth-sues200-distractors", lambda w: ["synth", "--out", str(w.tmp / "s"), "--layout", "sues200",
                                                 "--distractors", "2"], 2, ["--distractors 2"],
         "Leave --distractors out"),
    Case("validate-a-benchmark-folder", lambda w: ["validate", str(w.bench)], 7, ["benchmark"],
         "skyrank build", not_in=["incomplete build"]),
    Case("eval-missing-adapter", lambda w: ["eval", "--data", str(w.dataset), "--config", "precomputed-synthetic-d2s",
                                            "--adapter", str(w.tmp / "no-run")], 2, ["--adapter", "no-run"],
         "skyrank train"),
    Case("eval-not-a-run-folder", lambda w: ["eval", "--data", str(w.dataset), "--config", "precomputed-synthetic-d2s",
                                             "--adapter", str(w.tmp)], 2, ["--adapter", "adapter_config.json"],
         "skyrank train"),
    Case("unknown-retriever", lambda w: _build(w, "--retriever", "nope"), 2, ["--retriever", "nope"],
         "sample4geo"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_message_and_the_right_exit_code(world: World, case: Case, monkeypatch) -> None:
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    if case.setup:
        case.setup(world)
    if case.patch:
        case.patch(monkeypatch, world)
    try:
        result = CliRunner().invoke(cli.main, case.args(world))
    finally:
        if case.teardown:
            case.teardown(world)
    out = result.output
    assert "Traceback" not in out, out
    assert result.exit_code == case.code, out
    for name in case.names:
        assert name in out, (name, out)
    assert case.fix in out, (case.fix, out)
    for bad in case.not_in:
        assert bad not in out, (bad, out)
    if result.exit_code != 0:
        assert out.count("Error") == 1, out  # one message, the fix given once


EXTRA = [
    Case("synth-sues200-names-the-root-to-pass", lambda w: ["synth", "--out", str(w.tmp / "ss"), "--layout", "sues200",
                                                          "--locations", "2", "--views", "1", "--image-size", "32",
                                                          "--quiet"], 0, ["SUES-200-512x512"], "--root"),
    Case("publish-dry-run-offline", lambda w: ["publish", str(w.dataset), "--repo-id", "alice/skyrank", "--dry-run"],
         0, ["new", "remote unknown"], "could not compare with the Hub", env={"HF_HUB_OFFLINE": "1", "HF_TOKEN": ""}),
]  # fmt: skip


# ------------------------------------------------------------------------------------------------ issue 21
# Faults of the machine or of the user's files: each a named error with its fix, never "This is a bug".
def _parquet_writer_on(path: str) -> Callable[[pytest.MonkeyPatch, World], None]:
    """The writer's shards go to ``path`` (``/dev/full`` answers every write with ENOSPC, as a full disk does)."""

    def patch(monkeypatch: pytest.MonkeyPatch, w: World) -> None:
        import skyrank.writer

        real = skyrank.writer.pq.ParquetWriter
        monkeypatch.setattr(skyrank.writer.pq, "ParquetWriter", lambda where, *a, **k: real(open(path, "wb"), *a, **k))

    return patch


def _parquet_writer_raises(code: int, text: str) -> Callable[[pytest.MonkeyPatch, World], None]:
    def patch(monkeypatch: pytest.MonkeyPatch, w: World) -> None:
        import skyrank.writer

        def refuse(where, *a, **k):
            raise OSError(code, text, str(where))

        monkeypatch.setattr(skyrank.writer.pq, "ParquetWriter", refuse)

    return patch


def _little_free_space(monkeypatch: pytest.MonkeyPatch, w: World) -> None:
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))


def _build_raises_enospc(monkeypatch: pytest.MonkeyPatch, w: World) -> None:
    import skyrank.build

    def full(**kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(w.tmp / "cache" / "tile.jpg"))

    monkeypatch.setattr(skyrank.build, "build_dataset", full)


def _build_raises(make: Callable[[], BaseException]) -> Callable[[pytest.MonkeyPatch, World], None]:
    """The build fails with ``make()``, as torch raises it when memory runs out."""

    def patch(monkeypatch: pytest.MonkeyPatch, w: World) -> None:
        import skyrank.build

        def fail(**kwargs):
            raise make()

        monkeypatch.setattr(skyrank.build, "build_dataset", fail)

    return patch


def _truncated_dataset(w: World) -> None:
    import shutil

    out = w.tmp / "ds-truncated"
    if not out.exists():
        shutil.copytree(w.dataset, out)
        for shard in (out / "precomputed-synthetic-d2s").glob("*.parquet"):
            shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def _candidates(w: World) -> None:
    (w.tmp / "bad.csv").write_text("query,candidate,score\nq1.jpg,a.jpg,0.5\nq1.jpg,b.jpg,0.4,0.3\n")
    (w.tmp / "bad-score.csv").write_text("query,candidate,score\nq1.jpg,a.jpg,0.5\nq1.jpg,b.jpg,high\n")
    (w.tmp / "run-ok").mkdir(exist_ok=True)
    (w.tmp / "run-ok" / "adapter_config.json").write_text("{}")


def _run_folder(name: str, broken: str, content: bytes | None) -> Callable[[World], None]:
    """A run folder whose file ``broken`` is missing (``content`` None) or holds ``content``; the others are whole."""

    def setup(w: World) -> None:
        from safetensors.torch import save_file

        run = w.tmp / name
        run.mkdir(exist_ok=True)
        (run / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
        (run / "skylink_config.json").write_text(json.dumps({"base_model": str(w.tmp / "m")}))
        save_file({"x": torch.zeros(2, 2)}, str(run / "adapter_model.safetensors"))
        save_file({"value_head.weight": torch.zeros(1, 4)}, str(run / "value_head.safetensors"))
        if content is None:
            (run / broken).unlink()
        elif content == b"<truncate>":
            data = (run / broken).read_bytes()
            (run / broken).write_bytes(data[: len(data) - 5])
        else:
            (run / broken).write_bytes(content)

    return setup


BAD_HEADER = b"\x08" + b"\0" * 7 + b"{oops"  # an 8-byte header that is not JSON


def _eval_run(name: str) -> Callable[[World], list[str]]:
    return lambda w: ["eval", "--data", str(w.dataset), "--config", "precomputed-synthetic-d2s", "--adapter",
                      str(w.tmp / name)]  # fmt: skip


def _hub_answers(status: int) -> Callable[[pytest.MonkeyPatch, World], None]:
    """The next requests to a fake Hub (a real HTTP server) answer ``status``; the Hub client is pointed at it."""

    def patch(monkeypatch: pytest.MonkeyPatch, w: World) -> None:
        from huggingface_hub import constants

        from tests.skyrank.fake_hub import FakeHub

        hub = FakeHub().start()
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        hub.fail_next("repo_info", status, times=50)
        w.files["hub"] = hub  # type: ignore[assignment]

    return patch


def _stop_hub(w: World) -> None:
    hub = w.files.pop("hub", None)
    if hub is not None:
        hub.stop()  # type: ignore[attr-defined]


def _hub_eval(w: World) -> list[str]:
    return ["eval", "--data", "alice/skyrank", "--config", "precomputed-synthetic-d2s"]


def _no_out(name: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        assert not (w.tmp / name).exists(), f"{name} was left behind"
        assert not list(w.tmp.glob(f".{name}.partial*")), "the staging folder was left behind"

    return check


ENVIRONMENT = [
    Case("disk-full-before-writing", lambda w: _build(w, *_precomputed(w), out="full-early"), 12,
         ["not enough space", "full-early", "free at", "needed"], "free at least", patch=_little_free_space,
         teardown=_no_out("full-early")),
    Case("disk-full-while-writing", lambda w: _build(w, *_precomputed(w), out="full-late"), 12,
         ["No space left on device", "gallery-synthetic/test", "full-late", "free at"], "Nothing half-written",
         patch=_parquet_writer_on("/dev/full"), teardown=_no_out("full-late")),
    Case("permission-denied-while-writing", lambda w: _build(w, *_precomputed(w), out="perm"), 6,
         ["permission denied", "perm"], "write access", patch=_parquet_writer_raises(errno.EACCES,
                                                                                     "Permission denied")),
    Case("read-only-file-system", lambda w: _build(w, *_precomputed(w), out="ro"), 6, ["read-only", "ro"],
         "remount", patch=_parquet_writer_raises(errno.EROFS, "Read-only file system")),
    Case("synth-disk-full", lambda w: ["synth", "--out", str(w.tmp / "synth-full"), "--locations", "2", "--views",
                                       "1", "--image-size", "32", "--quiet"], 12,
         ["synthetic benchmark", "synth-full", "needed"], "free at least", patch=_little_free_space,
         teardown=_no_out("synth-full")),
    Case("disk-full-elsewhere", lambda w: ["build", "--quiet"], 12, ["tile.jpg", "No space left on device"],
         "free some space", patch=_build_raises_enospc),
    Case("gpu-out-of-memory", lambda w: ["build", "--quiet"], 13, ["out of GPU memory", "Tried to allocate 2.00 GiB"],
         "--batch-size", patch=_build_raises(lambda: torch.OutOfMemoryError(
             "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 GiB")),
         not_in=["This is a bug"]),
    Case("cpu-out-of-memory", lambda w: ["build", "--quiet"], 13, ["out of CPU memory", "DefaultCPUAllocator"],
         "--num-workers", patch=_build_raises(lambda: RuntimeError(
             "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
             "allocate 68719476736 bytes.")), not_in=["This is a bug"]),
    Case("worker-killed-by-the-oom-killer", lambda w: ["build", "--quiet"], 13,
         ["out of CPU memory", "pid 4242", "out-of-memory killer"], "--num-workers",
         patch=_build_raises(lambda: RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")),
         not_in=["This is a bug"]),
    Case("train-truncated-shard", lambda w: ["train", "--data", str(w.tmp / "ds-truncated"), "--config",
                                             "precomputed-synthetic-d2s", "--model", str(w.tmp / "m"), "--out",
                                             str(w.tmp / "run")], 7,
         ["precomputed-synthetic-d2s/train-00000-of-00001.parquet", "truncated or corrupt"], "skyrank validate",
         setup=_truncated_dataset),
    Case("eval-truncated-shard", lambda w: ["eval", "--data", str(w.tmp / "ds-truncated"), "--config",
                                            "precomputed-synthetic-d2s"], 7,
         ["precomputed-synthetic-d2s/test-00000-of-00001.parquet", "truncated or corrupt"], "rebuild the folder",
         setup=_truncated_dataset),
    Case("rerank-malformed-csv", lambda w: ["rerank", "--adapter", str(w.tmp / "run-ok"), "--candidates",
                                            str(w.tmp / "bad.csv")], 2, ["bad.csv", "line 3", "column 4"],
         "Fix that line", setup=_candidates),
    Case("rerank-score-not-a-number", lambda w: ["rerank", "--adapter", str(w.tmp / "run-ok"), "--candidates",
                                                 str(w.tmp / "bad-score.csv")], 2,
         ["bad-score.csv", "line 3", "column 3", "'high'"], "must be a number", setup=_candidates),
    Case("adapter-weights-missing", _eval_run("run-a"), 5, ["run-a", "adapter_model.safetensors", "missing"],
         "skyrank train --out", setup=_run_folder("run-a", "adapter_model.safetensors", None)),
    Case("adapter-weights-corrupt", _eval_run("run-b"), 5, ["adapter_model.safetensors", "corrupt"],
         "skyrank train --out", setup=_run_folder("run-b", "adapter_model.safetensors", BAD_HEADER)),
    Case("value-head-truncated", _eval_run("run-c"), 5, ["value_head.safetensors", "truncated"],
         "copy that file again", setup=_run_folder("run-c", "value_head.safetensors", b"<truncate>")),
    Case("run-config-missing", _eval_run("run-d"), 5, ["skylink_config.json", "missing"], "skyrank train --out",
         setup=_run_folder("run-d", "skylink_config.json", None)),
    Case("run-config-corrupt", _eval_run("run-e"), 5, ["skylink_config.json", "not valid JSON"],
         "skyrank train --out", setup=_run_folder("run-e", "skylink_config.json", b"{base_model")),
    *[Case(f"hub-{status}", _hub_eval, 9, ["alice/skyrank", f"({status}"], fix, patch=_hub_answers(status),
           teardown=_stop_hub, env={"HF_TOKEN": "", "HF_HUB_OFFLINE": "0"})
      for status, fix in [(401, "Set HF_TOKEN"), (403, "Accept its conditions"), (404, "Check the repo id"),
                          (429, "Wait a few minutes"), (500, "re-run later"), (503, "re-run later")]],
]  # fmt: skip


@pytest.mark.parametrize("case", ENVIRONMENT, ids=[c.id for c in ENVIRONMENT])
def test_a_fault_of_the_machine_or_files_is_named_with_its_fix(world: World, case: Case, monkeypatch) -> None:
    test_bad_input_gives_one_clear_message_and_the_right_exit_code(world, case, monkeypatch)  # not exit 1: a bug


@pytest.mark.parametrize("case", EXTRA, ids=[c.id for c in EXTRA])
def test_what_used_to_mislead_or_need_the_network(world: World, case: Case, monkeypatch) -> None:
    test_bad_input_gives_one_clear_message_and_the_right_exit_code(world, case, monkeypatch)


def test_skipped_files_and_random_weights_are_named_in_the_summary_and_the_card(world: World) -> None:
    _dangling(world)
    empty = world.bench / "test" / "gallery_satellite" / "9999"
    empty.mkdir(exist_ok=True)
    out = world.tmp / "skipped"
    args = _build(world, "--retriever", "sample4geo", "--arch", ARCH, "--image-size", "32", "--random-weights",
                  "--skip-bad-images", out="skipped")  # fmt: skip
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert "zz-dangling.jpeg" in result.output and "test/gallery_satellite/9999" in result.output
    assert "random, untrained" in result.output
    card = (out / "README.md").read_text()
    assert "zz-dangling.jpeg" in card and "test/gallery_satellite/9999" in card
    assert "**Warning: this dataset was built with a retriever holding random, untrained weights" in card
    _undangle(world)
    empty.rmdir()


def test_a_bug_is_one_line_and_debug_shows_the_traceback(monkeypatch) -> None:
    import skyrank.build

    def boom(**kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(skyrank.build, "build_dataset", boom)
    result = CliRunner().invoke(cli.main, ["build", "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "unexpected KeyError" in result.output and "skyrank --debug build" in result.output
    result = CliRunner().invoke(cli.main, ["--debug", "build", "--quiet"])
    assert isinstance(result.exception, KeyError)  # re-raised: click's runner holds the traceback


def test_every_error_type_has_an_exit_code_and_hint() -> None:
    import inspect

    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.SkyRankError):
            code, hint = cli.error_exit(cls("x"), "build")
            assert code >= 1 and hint, cls


def test_validate_catches_an_edited_soft_label_and_says_what_it_cannot_recompute(world: World, tmp_path) -> None:
    import shutil

    import pyarrow.parquet as pq

    from skyrank.writer import MANIFEST_NAME, sha256_of

    ok = CliRunner().invoke(cli.main, ["validate", str(world.dataset)])
    assert ok.exit_code == 0, ok.output
    assert "recomputed from the published embeddings" in ok.output and "candidate_gt_similarity" in ok.output
    assert "not checkable" in ok.output

    edited = tmp_path / "edited"
    shutil.copytree(world.dataset, edited)
    path = next((edited / "precomputed-synthetic-d2s").glob("test-*.parquet"))
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["candidate_gt_similarity"][0] = round(rows[0]["candidate_gt_similarity"][0] - 0.25, 6)
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    manifest = json.loads((edited / MANIFEST_NAME).read_text())  # re-signed, as an editor would
    rel = path.relative_to(edited).as_posix()
    manifest["files"][rel].update(bytes=path.stat().st_size, sha256=sha256_of(path))
    (edited / MANIFEST_NAME).write_text(json.dumps(manifest))
    bad = CliRunner().invoke(cli.main, ["validate", str(edited)])
    assert bad.exit_code == 7, bad.output
    assert "candidate_gt_similarity that differs from the embeddings (Eq. 6)" in bad.output
