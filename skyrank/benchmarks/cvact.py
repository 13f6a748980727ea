"""CVACT reader (ground panorama → aerial tile), validation and test (Liu, Li, CVPR 2019).

Layout (Sample4Geo ``dataset/cvact.py``; OriCNN ``input_data_ACT*.py``), rooted at ``CVACT``::

    CVACT/
      ACT_data.mat                    panoIds, utm (N x 2), trainSet.trainInd, valSet.valInd, valSetAll.valInd
      ANU_data_small/streetview/<id>_grdView.jpg
      ANU_data_small/satview_polish/<id>_satView_polish.jpg     train and val
      ANU_data_test/streetview/..., ANU_data_test/satview_polish/...   test

The split indices are **1-based MATLAB indices** into ``panoIds`` (1 is subtracted). Two registered benchmarks:

- ``cvact``: train = ``trainSet`` (35,532), test = ``valSet`` (CVACT_val, 8,884) from ``ANU_data_small``;
  one-to-one (the tile with the same id is the positive), as Sample4Geo, TransGeo and most papers score it.
- ``cvact_test``: train as above, test = ``valSetAll`` (CVACT_test, 92,802) from ``ANU_data_test`` under the
  original protocol (``OriCNN:CVPR2019_codes/Matlab/RecallGeo.m``): a tile is a positive when its UTM position is
  within 5 m of the query's (``L2_dis <= 5``), computed here at read time into each query's ``positives``.
  Sample4Geo scores this split one-to-one instead (``cvact_test_1to1``: the same queries and gallery, the tile
  with the query's id the only positive); the two are not comparable.

Like Sample4Geo's loader, a listed id whose ground or aerial file is missing is dropped; the dropped paths are
listed in ``RetrievalSplit.missing_files``. Labels are the ids. UTM is not converted to latitude/longitude (the
records' ``latitude``/``longitude`` are None). Only ``d2s`` (ground query → aerial gallery) is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skyrank.benchmarks._base import Benchmark, ImageRecord, RetrievalSplit, register_benchmark
from skyrank.benchmarks._files import list_names, require_paths
from skyrank.benchmarks.university1652 import check_split_options
from skyrank.errors import BenchmarkLayoutError
from skyrank.metrics import CVACT_RADIUS_M, positives_within_radius

MAT_NAME = "ACT_data.mat"
GROUND_SUFFIX = "_grdView.jpg"
AERIAL_SUFFIX = "_satView_polish.jpg"
#: the original CVACT_test rule: a tile within this many metres (UTM) of the query is a positive
POSITIVE_RADIUS_M = CVACT_RADIUS_M  # the original RecallGeo.m rule, defined once in skyrank.metrics

CVACT_CITATION = """\
@inproceedings{liu2019lending,
  title     = {Lending Orientation to Neural Networks for Cross-view Geo-localization},
  author    = {Liu, Liu and Li, Hongdong},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {5624--5633},
  year      = {2019},
  eprint    = {1903.12351},
  archivePrefix = {arXiv}
}"""

EXPECTED_LAYOUT = (
    "ACT_data.mat (panoIds, utm, trainSet.trainInd, valSet.valInd, valSetAll.valInd) with "
    "ANU_data_small/{streetview,satview_polish}/ (train, val) and ANU_data_test/{streetview,satview_polish}/ (test)"
)


def _pano_ids(raw: np.ndarray) -> list[str]:
    """``panoIds`` as strings, whether scipy gives a char array or a cell array of strings."""
    out = []
    for x in np.asarray(raw).ravel():
        while isinstance(x, np.ndarray):
            x = x.ravel()[0] if x.size else ""
        out.append(str(x).strip())
    return out


def read_act_data(path: Path) -> dict[str, np.ndarray | list[str]]:
    """``panoIds``, ``utm`` and the 0-based index arrays ``train``, ``val``, ``test`` of an ``ACT_data.mat``."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path, variable_names=["panoIds", "utm", "trainSet", "valSet", "valSetAll"])
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5)
        raise BenchmarkLayoutError(f"{path} is a MATLAB v7.3 file; CVACT's ACT_data.mat is v5 ({err})") from None
    except (MatReadError, ValueError, OSError, TypeError) as err:
        raise BenchmarkLayoutError(f"{path} is not a readable MATLAB file: {err}") from None
    missing = [k for k in ("panoIds", "utm", "trainSet", "valSet", "valSetAll") if k not in mat]
    if missing:
        raise BenchmarkLayoutError(f"{path} lacks the variable(s) {', '.join(missing)}. Expected: {EXPECTED_LAYOUT}")
    ids = _pano_ids(mat["panoIds"])
    utm = np.asarray(mat["utm"], dtype=np.float64).reshape(-1, 2)
    if len(utm) != len(ids):
        raise BenchmarkLayoutError(f"{path}: utm has {len(utm)} rows but panoIds has {len(ids)} ids")
    out: dict[str, np.ndarray | list[str]] = {"panoIds": ids, "utm": utm}
    for key, struct, field in (("train", "trainSet", "trainInd"), ("val", "valSet", "valInd"),
                               ("test", "valSetAll", "valInd")):  # fmt: skip
        try:
            raw = mat[struct][0, 0][field]
        except (ValueError, IndexError, KeyError):
            raise BenchmarkLayoutError(f"{path}: {struct} has no field {field}") from None
        ind = np.asarray(raw).ravel().astype(np.int64) - 1  # 1-based MATLAB indices
        if ind.size and (ind.min() < 0 or ind.max() >= len(ids)):
            raise BenchmarkLayoutError(
                f"{path}: {struct}.{field} holds indices outside 1..{len(ids)} (they are 1-based into panoIds)"
            )
        out[key] = ind
    return out


class _CVACT(Benchmark):
    """CVACT; ``root`` is the ``CVACT`` folder."""

    display_name = "CVACT"
    root_example = ".../CVACT (holding ACT_data.mat, ANU_data_small/, ANU_data_test/)"
    license = "other"
    license_name = "cvact-terms"
    license_link = "https://github.com/Liumouliu/OriCNN"
    redistributable = False  # released on request for research use; no redistribution licence
    derived_data = False
    writes_optional_columns = True
    citation = CVACT_CITATION
    evaluation_protocol = "cvact"
    directions = ("d2s",)
    test_key: str = "val"  # which index set is the test split
    radius_positives: bool = False  # test positives: every tile within POSITIVE_RADIUS_M
    card_notes = (
        "CVACT, ground panorama → aerial tile (`d2s`), split indices from `ACT_data.mat` (1-based). `cvact`: test is "
        "CVACT_val (`valSet`, 8,884), one-to-one, as Sample4Geo and TransGeo report it. `cvact_test`: test is "
        "CVACT_test (`valSetAll`, 92,802, `ANU_data_test`) under the original protocol: every tile within 5 m (UTM) "
        "of the query is a positive (`positive_ids`; the manifest's `explicit_positives` is true); `cvact_test_1to1` "
        "scores the same split one-to-one, as Sample4Geo's test table does. Listed ids whose "
        "ground or aerial file is missing are dropped, as Sample4Geo's loader does. `semi_positive_ids` is empty; "
        "`latitude`/`longitude` are null (the file holds UTM only)."
    )

    def load_split(
        self,
        root: str | Path,
        split: str,
        direction: str = "d2s",
        protocol: str = "official",
        altitude: str | int | None = None,
    ) -> RetrievalSplit:
        """Queries (ground panoramas) and gallery (aerial tiles) of one split, sorted by ``image_id``."""
        path = check_split_options(self.display_name, root, split, direction, protocol, altitude,
                                   directions=self.directions)  # fmt: skip
        key = "train" if split == "train" else self.test_key
        folder = "ANU_data_test" if key == "test" else "ANU_data_small"
        require_paths(path, [MAT_NAME, f"{folder}/streetview/", f"{folder}/satview_polish/"],
                      self.display_name, EXPECTED_LAYOUT)  # fmt: skip
        data = read_act_data(path / MAT_NAME)
        ids: list[str] = data["panoIds"]  # type: ignore[assignment]
        ground_names = list_names(path / folder / "streetview")
        aerial_names = list_names(path / folder / "satview_polish")
        kept: list[int] = []
        missing: list[str] = []
        for i in np.asarray(data[key]).tolist():
            g, a = ids[i] + GROUND_SUFFIX, ids[i] + AERIAL_SUFFIX
            lost = [f"{folder}/{sub}/{n}" for sub, n, names in (("streetview", g, ground_names),
                                                                ("satview_polish", a, aerial_names)) if n not in names]
            if lost:
                missing.extend(lost)
            else:
                kept.append(i)
        if not kept:
            raise BenchmarkLayoutError(
                f"none of the {len(np.asarray(data[key]))} {split} ids of {path / MAT_NAME} has both its "
                f"{folder}/streetview/<id>{GROUND_SUFFIX} and {folder}/satview_polish/<id>{AERIAL_SUFFIX}"
            )
        if len({ids[i] for i in kept}) != len(kept):
            raise BenchmarkLayoutError(f"{path / MAT_NAME}: the {split} indices name one panoId twice")
        gallery = [ImageRecord(f"{folder}/satview_polish/{ids[i]}{AERIAL_SUFFIX}", ids[i], "satellite") for i in kept]
        positives: list[tuple[str, ...] | None] = [None] * len(kept)
        if split == "test" and self.radius_positives:
            utm = np.asarray(data["utm"])[kept]
            near_all = positives_within_radius(utm, radius_m=POSITIVE_RADIUS_M)
            positives = [tuple(gallery[j].image_id for j in near) for near in near_all]
        queries = [
            ImageRecord(f"{folder}/streetview/{ids[i]}{GROUND_SUFFIX}", ids[i], "ground", positives=pos)
            for i, pos in zip(kept, positives, strict=True)
        ]
        queries.sort()
        gallery.sort()
        return RetrievalSplit(self.name, split, direction, protocol, path, queries, gallery, missing_files=missing)


@register_benchmark("cvact")
class CVACTVal(_CVACT):
    """CVACT_val: ``valSet`` (8,884) as the test split, one-to-one."""

    display_name = "CVACT (val)"
    test_key = "val"


@register_benchmark("cvact_test")
class CVACTTest(_CVACT):
    """CVACT_test: ``valSetAll`` (92,802) from ``ANU_data_test`` as the test split, positives within 5 m."""

    display_name = "CVACT (test)"
    test_key = "test"
    radius_positives = True


@register_benchmark("cvact_test_1to1")
class CVACTTestOneToOne(_CVACT):
    """CVACT_test scored one-to-one (the tile with the query's id is its only positive), as Sample4Geo's
    ``eval_cvact.py`` test split does: the numbers of its CVACT test table."""

    display_name = "CVACT (test, one-to-one)"
    test_key = "test"
    radius_positives = False
