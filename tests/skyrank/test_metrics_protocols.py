"""Each benchmark's own evaluator rules (issue 20), on cases worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skyrank.metrics import (
    PROTOCOLS,
    TOP1_PERCENT_DEFINITIONS,
    get_protocol,
    haversine_m,
    ma_at_m,
    positives_within_radius,
    protocol_query_metrics,
    resolve_protocol,
    sdm_at_k,
    top1_percent_k_for,
    vigor_hit,
    vigor_hit_from_ranking,
    vigor_scores,
)


@pytest.mark.parametrize(
    ("n", "floor", "int_plus_1", "cmc"),
    [
        (8884, 88, 89, 90),  # CVUSA, CVACT val (the note's table)
        (90618, 906, 907, 907),  # VIGOR same-area
        (46563, 465, 466, 467),  # VIGOR cross-area: 465.63 rounds to 466, + 1
        (92802, 928, 929, 929),  # CVACT test
        (951, 9, 10, 11),  # University-1652 D2S
        (18198, 181, 182, 183),  # DenseUAV gallery
        (250, 2, 3, 3),  # 2.5 rounds half to even: 2, + 1
        (50, 0, 1, 1),  # floor: nobody hits below 100 images (R//100); cmc: round(0.5) = 0
        (1, 0, 1, 1),
    ],
)
def test_top1_percent_three_definitions(n, floor, int_plus_1, cmc):
    assert top1_percent_k_for(n, "floor") == floor
    assert top1_percent_k_for(n, "int+1") == int_plus_1
    assert top1_percent_k_for(n, "cmc") == cmc
    with pytest.raises(ValueError, match="floor, int\\+1, cmc"):
        top1_percent_k_for(n, "round")


def test_every_protocol_names_a_known_r1pct_definition():
    assert set(PROTOCOLS) == {"university1652", "sues200", "vigor", "cvusa", "cvact", "denseuav",
                              "university1652-street"}
    for p in PROTOCOLS.values():
        assert p.top1_percent in TOP1_PERCENT_DEFINITIONS
    # Sample4Geo's numbers for its three ground-level benchmarks; the University-1652 CMC everywhere else.
    assert {n for n, p in PROTOCOLS.items() if p.top1_percent == "floor"} == {"vigor", "cvusa", "cvact"}


def test_vigor_hit_strictness_by_hand():
    # indices: 0 positive, 1-3 semi-positives, 4-5 negatives
    semi = [1, 2, 3]
    assert vigor_hit(np.array([0.9, 0.5, 0.4, 0.3, 0.2, 0.1]), 0, semi)  # positive first
    assert vigor_hit(np.array([0.7, 0.9, 0.8, 0.3, 0.2, 0.1]), 0, semi)  # only semi-positives above: a hit
    # a semi-positive first, then a negative, then the positive: the code's miss (the paper's prose would hit)
    assert not vigor_hit(np.array([0.7, 0.9, 0.5, 0.3, 0.8, 0.1]), 0, semi)
    assert vigor_hit(np.array([0.7, 0.5, 0.4, 0.3, 0.7, 0.1]), 0, semi)  # a tie goes to the query


def test_vigor_scores_by_hand():
    # 3 queries x 6 references; positives 0, 1, 2; semi-positives listed per query.
    sim = np.array([
        [0.9, 0.1, 0.2, 0.3, 0.4, 0.5],  # positive first: rank 0
        [0.8, 0.7, 0.1, 0.2, 0.3, 0.0],  # semi-positive 0 above: rank 1, a hit
        [0.9, 0.1, 0.5, 0.8, 0.1, 0.6],  # semi 0, negative 3, negative 5 above: rank 3, no hit
    ])  # fmt: skip
    out = vigor_scores(sim, [0, 1, 2], [[1, 2, 3], [0, 2, 3], [0, 1, 4]], ks=(1, 5))
    assert out["R@1"] == pytest.approx(100 / 3)
    assert out["R@5"] == pytest.approx(100.0)
    assert out["R@top1%"] == 0.0  # 6 // 100 = 0: nobody
    assert out["Hit_Rate"] == pytest.approx(200 / 3)


def test_vigor_hit_from_ranking_agrees_with_the_matrix_rule():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = 8
        sim = rng.integers(0, 4, size=n).astype(float)  # many ties
        pos, *semi = rng.permutation(n)[:4].tolist()
        # SkyRank's ranking: descending score, the positive ahead of every reference with its score
        order = sorted(range(n), key=lambda j: (-sim[j], j != pos, j))
        ranked = [f"g{j}" for j in order]
        rank = order.index(pos) + 1
        got = vigor_hit_from_ranking(ranked, rank, [f"g{j}" for j in semi])
        assert got == float(vigor_hit(sim, pos, semi))


def test_vigor_hit_from_ranking_edges():
    assert vigor_hit_from_ranking(["s1", "s2", "p"], 3, ["s1", "s2", "s3"]) == 1.0
    assert vigor_hit_from_ranking(["s1", "n", "p"], 3, ["s1", "s2", "s3"]) == 0.0
    assert vigor_hit_from_ranking(["a", "b", "c", "d"], 5, ["a", "b", "c"]) == 0.0  # 4 above, 3 semi
    with pytest.raises(ValueError, match="fewer"):
        vigor_hit_from_ranking(["s1"], 3, ["s1", "s2"])


def test_sdm_by_hand():
    step = 2.0**-13  # exactly representable in float32 at 120 degrees, so d is exact
    q = (120.0, 30.0)  # (longitude, latitude)
    ranked = np.array([[120.0, 30.0], [120.0 + step, 30.0], [120.0, 30.0 + 2 * step]])
    assert sdm_at_k(q, ranked, 1) == 1.0
    s2 = math.exp(-5000 * step)
    assert sdm_at_k(q, ranked, 2) == pytest.approx((1.0 + 0.5 * s2) / 1.5, rel=1e-12)
    s3 = math.exp(-5000 * 2 * step)
    assert sdm_at_k(q, ranked, 3) == pytest.approx((1.0 + (2 / 3) * s2 + (1 / 3) * s3) / 2.0, rel=1e-12)
    # the wrong location first: weights put it ahead, so SDM@2 drops below the right-first order
    assert sdm_at_k(q, ranked[[1, 0]], 2) == pytest.approx((s2 + 0.5) / 1.5, rel=1e-12)
    with pytest.raises(ValueError, match="top 4"):
        sdm_at_k(q, ranked, 4)


def test_sdm_distances_are_float32_like_the_original():
    # 1e-5 degrees at longitude 120 is one float32 step (2**-17), not 1e-5: the original's np.float32 arrays
    q = (120.0, 30.0)
    got = sdm_at_k(q, np.array([[120.00001, 30.0]]), 1)
    assert got == pytest.approx(math.exp(-5000 * 2.0**-17), rel=1e-9)
    assert got != pytest.approx(math.exp(-5000 * 1e-5), rel=1e-9)


def test_cvact_positives_within_5_m_by_hand():
    queries = np.array([[0.0, 0.0], [100.0, 100.0]])
    gallery = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0001], [100.0, 104.9], [95.0, 100.0], [-5.0, 0.0]])
    got = positives_within_radius(queries, gallery)
    assert [g.tolist() for g in got] == [[0, 1, 5], [3, 4]]  # exactly 5 m is in (L2_dis <= 5)


def test_cvact_positives_equal_brute_force():
    rng = np.random.default_rng(1)
    g = rng.uniform(0, 60, size=(400, 2))
    q = g[:150] + rng.normal(scale=1.0, size=(150, 2))
    got = positives_within_radius(q, g, 5.0)
    d = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    for i in range(len(q)):
        assert got[i].tolist() == np.flatnonzero(d[i] <= 5.0).tolist()
    same = positives_within_radius(g)  # one position list: CVACT test's query i and tile i share a UTM row
    assert [x.tolist() for x in same] == [x.tolist() for x in positives_within_radius(g, g)]


def test_resolve_protocol_from_manifest_keys():
    assert resolve_protocol({"evaluation_protocol": "vigor", "benchmark": "vigor-same"}).name == "vigor"
    assert resolve_protocol({"benchmark": "university1652"}).name == "university1652"
    assert resolve_protocol({"dataset": "sues200"}).name == "sues200"
    assert resolve_protocol({"benchmark": "synthetic"}) is None  # an old folder keeps the current columns
    assert resolve_protocol({}) is None
    # a benchmark without its own evaluator (the build records its name): the columns above
    assert resolve_protocol({"evaluation_protocol": "synthetic", "benchmark": "synthetic"}) is None
    assert resolve_protocol({"evaluation_protocol": "synthetic", "benchmark": "sues200"}).name == "sues200"
    with pytest.raises(ValueError, match="unknown evaluation protocol 'vigour'"):
        resolve_protocol({"evaluation_protocol": "vigour"}, strict=True)


def test_protocol_query_metrics_by_hand():
    vigor = get_protocol("vigor")
    got = protocol_query_metrics(vigor, ranked_ids=["s1", "p", "n"], positive_ranks=[2], semi_positive_ids=["s1"])
    assert got == {"Hit_Rate": 1.0}
    assert protocol_query_metrics(vigor, ranked_ids=["n", "p"], positive_ranks=[2])["Hit_Rate"] == 0.0
    assert protocol_query_metrics(vigor, ranked_ids=["n"], positive_ranks=[])["Hit_Rate"] == 0.0
    dense = get_protocol("denseuav")
    step = 2.0**-13
    where = {f"g{i}": (120.0 + i * step, 30.0) for i in range(10)}
    got = protocol_query_metrics(dense, ranked_ids=[f"g{i}" for i in range(10)], positive_ranks=[1],
                                 query_lonlat=(120.0, 30.0), lonlat=where)
    assert list(got) == ["SDM@1", "SDM@3", "SDM@5", "SDM@10", "MA@5m", "MA@10m", "MA@20m"]
    assert got["SDM@1"] == 1.0 and got["MA@5m"] == got["MA@20m"] == 1.0  # the top-1 is the query's own location
    w = [1, 2 / 3, 1 / 3]
    assert got["SDM@3"] == pytest.approx(sum(wi * math.exp(-5000 * i * step) for i, wi in enumerate(w)) / 2.0)
    # g1 first: 2**-13 degrees of longitude at latitude 30 is 11.77 m, outside 5 and 10 m, inside 20 m
    got = protocol_query_metrics(dense, ranked_ids=[f"g{i}" for i in (1, 0, *range(2, 10))], positive_ranks=[2],
                                 query_lonlat=(120.0, 30.0), lonlat=where)  # fmt: skip
    assert (got["MA@5m"], got["MA@10m"], got["MA@20m"]) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="longitude, latitude"):
        protocol_query_metrics(dense, ranked_ids=["g0"], positive_ranks=[1])


def test_haversine_and_ma_at_m_as_denseuavs_latlog2meter():
    # one degree of latitude on a meridian is R·π/180 with DenseUAV's R = 6378.137 km
    assert haversine_m((10.0, 0.0), (10.0, 1.0)) == pytest.approx(6_378_137.0 * math.pi / 180, rel=1e-12)
    # 2**-13 degrees of longitude at latitude 30: R·cos(30°)·Δλ for so short an arc
    east = haversine_m((120.0, 30.0), (120.0 + 2.0**-13, 30.0))
    assert east == pytest.approx(6_378_137.0 * math.cos(math.radians(30)) * math.radians(2.0**-13), rel=1e-6)
    assert 11.7 < east < 11.8 and haversine_m((120.0, 30.0), (120.0, 30.0)) == 0.0
    assert ma_at_m((120.0, 30.0), (120.0 + 2.0**-13, 30.0), 20) == 1.0
    assert ma_at_m((120.0, 30.0), (120.0 + 2.0**-13, 30.0), 10) == 0.0
    assert ma_at_m((0.0, 0.0), (0.0, 0.0), 1) == 1.0  # strictly closer: 0 < 1
    with pytest.raises(ValueError, match="m > 0"):
        ma_at_m((0.0, 0.0), (0.0, 0.0), 0)
