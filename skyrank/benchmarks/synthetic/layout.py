"""Writer of the synthetic benchmark: parameters, cache folder, the location plan and the files in the
University-1652 or SUES-200 on-disk layouts (atomic, byte-identical for the same parameters).

Details of the layouts and the determinism rules: DEVELOPERS.md, "The synthetic benchmark".
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skyrank.atomic import check_free_space, exclusive_lock, remove_path, swap_in_dir
from skyrank.benchmarks.synthetic.camera import _drone_view, _encode, _satellite
from skyrank.benchmarks.synthetic.world import (
    _SEED_LOCATION,
    _SEED_PLAN,
    _SEED_VIEW,
    REGION_SLOTS,
    _make_region,
    _margin,
    _Region,
)
from skyrank.errors import OptionError, OutputExistsError, storage_error

#: bump when the generated images change for the same parameters (it keys the cache folder)
SYNTHETIC_VERSION = 1

LAYOUTS: tuple[str, ...] = ("university1652", "sues200", "sues200-split", "sues200-lower")

#: The default parameters: small, so that the CI build (generate, train a tiny retriever, mine) takes seconds.
#: ``distractors`` applies to the University-1652 layout (SUES-200 layouts use 0).
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "layout": "university1652",
    "locations": 48,
    "test_locations": None,  # None: same as locations
    "distractors": 16,
    "views": 8,
    "image_size": 96,
    "seed": 0,
    "altitudes": (150, 200, 250, 300),
}


# ----------------------------------------------------------------------------------------------------------------
# parameters, cache folder
# ----------------------------------------------------------------------------------------------------------------


def _resolve_params(
    layout: str,
    locations: int | None,
    test_locations: int | None,
    distractors: int | None,
    views: int | None,
    image_size: int | None,
    seed: int,
    altitudes: Iterable[int] | None,
) -> dict[str, Any]:
    """Defaults filled in and every value checked; the result keys the cache folder and goes to synthetic.json."""
    if layout not in LAYOUTS:
        raise OptionError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    sues = layout != "university1652"
    locations = int(SYNTHETIC_DEFAULTS["locations"] if locations is None else locations)
    test_locations = int(locations if test_locations is None else test_locations)
    if distractors is None:
        distractors = 0 if sues else int(SYNTHETIC_DEFAULTS["distractors"])
    distractors = int(distractors)
    views = int(SYNTHETIC_DEFAULTS["views"] if views is None else views)
    image_size = int(SYNTHETIC_DEFAULTS["image_size"] if image_size is None else image_size)
    alts = tuple(int(a) for a in (SYNTHETIC_DEFAULTS["altitudes"] if altitudes is None else altitudes))
    if locations < 1 or test_locations < 1:
        raise OptionError(f"--locations must be >= 1 (test locations too), got {locations} and {test_locations}")
    if distractors < 0:
        raise OptionError(f"--distractors must be >= 0, got {distractors}")
    if sues and distractors:
        raise OptionError(
            f"--distractors {distractors}: the SUES-200 layouts have no distractor locations (their training "
            "locations are the gallery distractors, as in the official split)",
            hint="Leave --distractors out (or pass 0) with a SUES-200 --layout.",
        )
    if views < 1:
        raise OptionError(f"--views must be >= 1, got {views}")
    if image_size < 16:
        raise OptionError(f"--image-size must be >= 16, got {image_size}")
    if not alts or any(a <= 0 for a in alts) or len(set(alts)) != len(alts):
        raise OptionError(f"altitudes must be distinct positive integers, got {alts}")
    total = locations + test_locations + distractors
    if total > (9999 if sues else 10000):
        raise OptionError(f"at most 10,000 locations fit 4-digit IDs (--locations, --distractors), got {total}")
    return {
        "layout": layout,
        "locations": locations,
        "test_locations": test_locations,
        "distractors": distractors,
        "views": views,
        "image_size": image_size,
        "seed": int(seed),
        "altitudes": list(alts),
    }


def _params_key(params: dict[str, Any]) -> str:
    blob = json.dumps({"version": SYNTHETIC_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_synthetic_root(cache_dir: str | Path | None = None, **params: Any) -> Path:
    """The cache folder of a synthetic benchmark: ``<cache>/synthetic/<hash of the parameters>``.

    ``<cache>`` is ``cache_dir`` when given, else ``$SKYRANK_CACHE``, else ``~/.cache/skyrank``. ``params`` are
    :func:`generate_synthetic`'s (``layout``, ``locations``, ...); missing ones take :data:`SYNTHETIC_DEFAULTS`,
    so equal benchmarks share one folder.
    """
    resolved = _resolve_params(
        params.pop("layout", SYNTHETIC_DEFAULTS["layout"]),
        params.pop("locations", None),
        params.pop("test_locations", None),
        params.pop("distractors", None),
        params.pop("views", None),
        params.pop("image_size", None),
        params.pop("seed", SYNTHETIC_DEFAULTS["seed"]),
        params.pop("altitudes", None),
    )
    if params:
        raise TypeError(f"unknown synthetic benchmark parameters: {', '.join(sorted(params))}")
    if cache_dir is None:
        env = os.environ.get("SKYRANK_CACHE")
        cache_dir = Path(env) if env else Path.home() / ".cache" / "skyrank"
    return Path(cache_dir).expanduser() / "synthetic" / _params_key(resolved)


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    try:
        info = json.loads((root / "synthetic.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("version") == SYNTHETIC_VERSION and info.get("params") == params


def build_command(root: str | Path, layout: str) -> str:
    """The ``skyrank build`` command line for a benchmark :func:`generate_synthetic` wrote at ``root`` in ``layout``
    (the SUES-200 layouts are read by the ``sues200`` reader, from the raw archive's root folder)."""
    from skyrank.benchmarks.synthetic.trees import TREES

    root = Path(root)
    if layout == "university1652":
        return f"skyrank build --dataset synthetic --root {root} --out skyrank-syn"
    if layout in TREES:  # the ground-view layouts (VIGOR, CVUSA, CVACT, ...): their own reader and sub-folder
        _, _, sub, benches = TREES[layout]
        return (f"skyrank build --dataset {benches[0]} --root {root / sub} --retriever sample4geo --random-weights "
                "--arch convnext_atto --out skyrank-syn-ground (random weights: checks the path, ranks at chance; "
                "pass --checkpoint for a real ranking)")
    bench_root = root / "SUES-200-512x512" if layout == "sues200" else root
    return f"skyrank build --dataset sues200 --altitude 150 --root {bench_root} --retriever ... --checkpoint ..."


def ensure_synthetic(cache_dir: str | Path | None = None, progress: bool = True, **params: Any) -> Path:
    """The synthetic benchmark for ``params``, generated into :func:`default_synthetic_root` on first use.

    A complete folder (its ``synthetic.json`` matches the parameters and the generator version) is returned at
    once; otherwise it is (re)generated. Returns the folder (for ``layout="sues200"`` the benchmark root is its
    ``SUES-200-512x512`` sub-folder).
    """
    root = default_synthetic_root(cache_dir, **params)
    resolved = _resolve_params(
        params.get("layout", SYNTHETIC_DEFAULTS["layout"]),
        params.get("locations"),
        params.get("test_locations"),
        params.get("distractors"),
        params.get("views"),
        params.get("image_size"),
        params.get("seed", SYNTHETIC_DEFAULTS["seed"]),
        params.get("altitudes"),
    )
    if _is_complete(root, resolved):
        return root

    def waiting() -> None:
        if progress:
            print(f"another process is generating the cached synthetic benchmark {root}; waiting for it",
                  file=sys.stderr, flush=True)  # fmt: skip

    # Two builds/demos on one cache: the second waits for the first and reuses its folder. The lock dies with its
    # holder; what a killed holder left (a hidden staging folder, a folder without synthetic.json) is redone.
    with exclusive_lock(Path(str(root) + ".lock"), on_wait=waiting):
        if _is_complete(root, resolved):
            return root
        for stale in root.parent.glob(f".{root.name}.partial-*"):
            remove_path(stale)
        try:
            return generate_synthetic(root, overwrite=root.exists(), progress=progress, **params)
        except OutputExistsError:
            # another process (without the lock: an older SkyRank) finished the same benchmark first
            if _is_complete(root, resolved):
                return root
            raise


def _estimated_bytes(params: dict[str, Any]) -> int:
    """A generous size estimate of a synthetic benchmark on disk: 2 bytes per pixel of every image (its JPEGs take
    well under 1)."""
    locations = params["locations"] + params["test_locations"] + params["distractors"]
    per_location = 1 + params["views"] * max(1, len(params["altitudes"]))
    return int(locations * per_location * params["image_size"] ** 2 * 3 * 2 // 3)


# ----------------------------------------------------------------------------------------------------------------
# the plan: which ID sits in which region slot, and where its files go
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Location:
    id: str
    role: str  # "train" | "test" | "distractor"
    kind: int  # 0: train regions, 1: test regions
    region: int
    slot: int


def _plan(params: dict[str, Any]) -> list[_Location]:
    """Every location: its ID, role and region slot, from the seed alone."""
    rng = np.random.default_rng([params["seed"], _SEED_PLAN])
    n_train, n_test, n_dis = params["locations"], params["test_locations"], params["distractors"]
    total = n_train + n_test + n_dis
    if params["layout"] == "university1652":
        numbers = rng.permutation(total)  # IDs 0000.. shuffled over train, test and distractors
        train_nums, test_nums = numbers[:n_train], numbers[n_train : n_train + n_test]
        dis_nums = numbers[n_train + n_test :]
    else:
        train_set = np.sort(rng.choice(total, size=n_train, replace=False)) + 1  # IDs 0001.., like SUES-200
        rest = np.setdiff1d(np.arange(1, total + 1), train_set)
        train_nums, test_nums, dis_nums = rng.permutation(train_set), rng.permutation(rest), np.array([], int)
    out = [
        _Location(f"{int(n):04d}", "train", 0, i // REGION_SLOTS, i % REGION_SLOTS) for i, n in enumerate(train_nums)
    ]
    test_side = [(int(n), "test") for n in test_nums] + [(int(n), "distractor") for n in dis_nums]
    order = rng.permutation(len(test_side))  # distractors mixed into the test regions
    for i, k in enumerate(order):
        n, role = test_side[int(k)]
        out.append(_Location(f"{n:04d}", role, 1, i // REGION_SLOTS, i % REGION_SLOTS))
    return out


def _targets(layout: str, loc: _Location, altitudes: list[int]) -> tuple[list[str], list[str]]:
    """(satellite folders, drone folders) of one location; SUES-200 folders hold an ``{alt}`` placeholder."""
    i = loc.id
    if layout == "university1652":
        if loc.role == "train":
            return [f"train/satellite/{i}"], [f"train/drone/{i}"]
        if loc.role == "test":
            return [f"test/query_satellite/{i}", f"test/gallery_satellite/{i}"], [
                f"test/query_drone/{i}",
                f"test/gallery_drone/{i}",
            ]
        return [f"test/gallery_satellite/{i}"], [f"test/gallery_drone/{i}"]
    if layout == "sues200":
        return ["SUES-200-512x512/satellite-view/" + i], [f"SUES-200-512x512/drone_view_512/{i}/{{alt}}"]
    top = {"sues200-split": ("Training", "Testing"), "sues200-lower": ("train", "test")}[layout]
    sats, drones = [], []
    if loc.role == "train":
        sats.append(f"{top[0]}/{{alt}}/satellite/{i}")
        drones.append(f"{top[0]}/{{alt}}/drone/{i}")
    else:
        sats.append(f"{top[1]}/{{alt}}/query_satellite/{i}")
        drones.append(f"{top[1]}/{{alt}}/query_drone/{i}")
    sats.append(f"{top[1]}/{{alt}}/gallery_satellite/{i}")
    drones.append(f"{top[1]}/{{alt}}/gallery_drone/{i}")
    return sats, drones


def _write(root: Path, folders: Iterable[str], name: str, data: bytes, loc_id: str, counts: dict[str, int]) -> None:
    """Write the same bytes into every folder; count files per view folder (the folder without the ID)."""
    for rel in folders:
        folder = root / rel
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        key = "/".join(part for part in rel.split("/") if part != loc_id)
        counts[key] = counts.get(key, 0) + 1


def _generate_location(
    root: Path, params: dict[str, Any], loc: _Location, region: _Region, counts: dict[str, int]
) -> None:
    """Render and write every file of one location (its own generators: order-independent)."""
    layout, size, views, seed = params["layout"], params["image_size"], params["views"], params["seed"]
    number = int(loc.id)
    slot = region.slots[loc.slot]
    sats, drones = _targets(layout, loc, params["altitudes"])
    sat_rng = np.random.default_rng([seed, _SEED_LOCATION, number])
    sat = _satellite(region, slot, size, sat_rng)
    heading0 = sat_rng.uniform(0, 2 * math.pi)
    if layout == "university1652":
        _write(root, sats, f"{loc.id}.jpg", _encode(sat, "JPEG"), loc.id, counts)
        hi, lo = max(params["altitudes"]), min(params["altitudes"])
        for v in range(views):
            rng = np.random.default_rng([seed, _SEED_VIEW, number, v])
            altitude = (hi - (hi - lo) * v / max(views - 1, 1)) * rng.uniform(0.95, 1.05)
            heading = heading0 + 2 * math.pi * v / views + rng.normal(0.0, 0.15)
            data = _encode(_drone_view(region, slot, size, altitude, heading, rng), "JPEG")
            _write(root, drones, f"image-{v + 1:02d}.jpeg", data, loc.id, counts)
        return
    sat_png = _encode(sat, "PNG")
    alts = params["altitudes"]
    if layout == "sues200":
        _write(root, sats, "0.png", sat_png, loc.id, counts)
    else:
        _write(root, [f.format(alt=a) for a in alts for f in sats], "0.png", sat_png, loc.id, counts)
    for a in alts:
        for v in range(views):
            rng = np.random.default_rng([seed, _SEED_VIEW, number, a, v])
            heading = heading0 + math.pi * v / views + rng.normal(0.0, 0.15)
            altitude = a * rng.uniform(0.97, 1.03)
            data = _encode(_drone_view(region, slot, size, altitude, heading, rng), "JPEG")
            _write(root, [f.format(alt=a) for f in drones], f"{v}.jpg", data, loc.id, counts)


def generate_synthetic(
    out: str | Path,
    layout: str = "university1652",
    *,
    locations: int | None = None,
    test_locations: int | None = None,
    distractors: int | None = None,
    views: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    altitudes: tuple[int, ...] = (150, 200, 250, 300),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the procedural cross-view benchmark into ``out`` in a real benchmark layout.

    Args:
        out: the folder to create (for ``layout="sues200"`` the benchmark root is ``out/SUES-200-512x512``).
        layout: ``university1652``, ``sues200`` (raw archive + ``indexs.yaml``), ``sues200-split``
            (``Training``/``Testing``) or ``sues200-lower`` (``train``/``test``); see DEVELOPERS.md, "The synthetic
            benchmark". ``vigor``, ``cvusa``, ``cvact``, ``denseuav`` and ``u1652-street`` are written by
            :func:`skyrank.benchmarks.synthetic.ground.generate_ground_synthetic` (ground views; the benchmark root
            is ``out/<VIGOR|CVUSA|CVACT|DenseUAV|University-Release>``).
        locations: training locations, and test (query) locations unless ``test_locations`` is given
            (default :data:`SYNTHETIC_DEFAULTS`: 48).
        test_locations: test locations, when different from ``locations`` (SUES-200: 120 train / 80 test).
        distractors: gallery-only test-region locations (University-1652 layout only; default 16, SUES-200 0).
        views: drone views per location (per altitude for SUES-200); default 8.
        image_size: side of every image in pixels; default 96.
        seed: the same seed and parameters give byte-identical files.
        altitudes: drone altitudes in metres: the SUES-200 altitude folders, or the University-1652 spiral's range.
        overwrite: replace an existing non-empty ``out``; without it an existing folder raises.
        progress: show a tqdm progress bar.

    Returns:
        ``out``, complete: a ``synthetic.json`` with the parameters, counts and IDs is written last and the folder
        appears by an atomic rename, so an interrupted run never leaves a folder that looks complete.

    Raises:
        OutputExistsError: ``out`` exists, is not empty and ``overwrite`` is false.
        ValueError: a parameter is out of range.
    """
    from tqdm.auto import tqdm

    from skyrank.benchmarks.synthetic.ground import GROUND_LAYOUTS, generate_ground_synthetic

    if layout in GROUND_LAYOUTS:  # VIGOR, CVUSA, CVACT, DenseUAV, University-1652 street (ground.py)
        if test_locations is not None:
            raise OptionError(f"--layout {layout} has as many test as training locations: drop test_locations")
        return generate_ground_synthetic(out, layout, locations=locations, distractors=distractors, views=views,
                                         image_size=image_size, seed=seed, overwrite=overwrite, progress=progress)
    params = _resolve_params(layout, locations, test_locations, distractors, views, image_size, seed, altitudes)
    out = Path(out).expanduser()
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    what = f"the synthetic benchmark {out}"
    check_free_space(out.parent, _estimated_bytes(params), what)  # before the work, with the estimate
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        plan = _plan(params)
        counts: dict[str, int] = {}
        scale = 2 * params["image_size"]
        regions = sorted({(loc.kind, loc.region) for loc in plan})
        by_region: dict[tuple[int, int], list[_Location]] = {}
        for loc in plan:
            by_region.setdefault((loc.kind, loc.region), []).append(loc)
        with tqdm(total=len(plan), desc="synthetic benchmark", unit="location", disable=not progress) as bar:
            for key in regions:
                region = _make_region(params["seed"], key[0], key[1], scale, _margin(max(params["altitudes"])))
                for loc in by_region[key]:
                    _generate_location(tmp, params, loc, region, counts)
                    bar.update(1)
        ids = {role: sorted(loc.id for loc in plan if loc.role == role) for role in ("train", "test", "distractor")}
        if params["layout"] == "sues200":
            quoted = ", ".join(f"'{i}'" for i in ids["train"])
            (tmp / "SUES-200-512x512" / "indexs.yaml").write_text(f"index : [{quoted}]\n", encoding="utf-8")
        info = {
            "generator": "skyrank.benchmarks.synthetic",
            "version": SYNTHETIC_VERSION,
            "license": "cc0-1.0",
            "params": params,
            "counts": dict(sorted(counts.items())),
            "train_ids": ids["train"],
            "test_ids": ids["test"],
            "distractor_ids": ids["distractor"],
        }
        (tmp / "synthetic.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        swap_in_dir(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        named = storage_error(exc, path=out, what=what, needed=_estimated_bytes(params))  # a full disk, ...
        if named is not None:
            raise named from exc
        raise
    return out


