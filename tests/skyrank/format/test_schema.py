"""skyrank.format.schema: one ConfigName parser/formatter for every config kind, and the hook for new kinds."""

from __future__ import annotations

import pytest
from datasets import Features, Value

from skyrank.format import schema
from skyrank.format.schema import CONFIG_KINDS, ConfigKind, ConfigName, register_config_kind


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("sample4geo-sues200-150-d2s", ("retriever", "sues200", "150", "sample4geo", "d2s")),
        ("mccg-university1652-s2d", ("retriever", "university1652", None, "mccg", "s2d")),
        ("gallery-university1652", ("gallery", "university1652", None, None, None)),
        ("queries-sues200-300", ("queries", "sues200", "300", None, None)),
        ("embeddings-sample4geo-sues200-150", ("embeddings", "sues200", "150", "sample4geo", None)),
    ],
)
def test_config_name_round_trip(name: str, parts: tuple) -> None:
    parsed = ConfigName.parse(name)
    assert (parsed.kind, parsed.benchmark, parsed.altitude, parsed.retriever, parsed.direction) == parts
    assert str(parsed) == name and ConfigName(*parts[:3], retriever=parts[3], direction=parts[4]) == parsed
    assert schema.config_kind(name) == parts[0] and schema.config_suffix(name) == parsed.suffix


def test_m_suffix_of_a_re_mined_config() -> None:
    p = ConfigName.parse("sample4geo-sues200-150-d2s-m30")
    assert (p.m, p.direction, p.altitude, p.suffix) == (30, "d2s", "150", "sues200-150")
    assert schema.config_top_m(str(p)) == 30 and schema.config_top_m("sample4geo-sues200-d2s") is None
    assert schema.with_top_m("sample4geo-sues200-d2s", 30) == "sample4geo-sues200-d2s-m30"
    assert schema.with_top_m("sample4geo-sues200-d2s-m30", None) == "sample4geo-sues200-d2s"
    assert schema.config_direction("mccg-university1652-s2d-m5") == "s2d"
    assert schema.retriever_config_name("a", "b", "d2s", m=4) == "a-b-d2s-m4"
    with pytest.raises(ValueError, match="m must be an integer >= 2"):
        schema.retriever_config_name("a", "b", "d2s", m=1)
    with pytest.raises(ValueError, match="not a retriever config"):
        schema.config_direction("gallery-university1652")


def test_builders_and_image_configs() -> None:
    assert schema.retriever_config_name("sample4geo", "sues200", "d2s", 150) == "sample4geo-sues200-150-d2s"
    assert schema.gallery_config_name("university1652") == "gallery-university1652"
    p = ConfigName.parse("sample4geo-sues200-150-d2s")
    assert (p.gallery_config, p.queries_config) == ("gallery-sues200-150", "queries-sues200-150")
    assert schema.features_for("gallery-x", with_images=True) == schema.IMAGE_TABLE_FEATURES_WITH_IMAGES
    assert schema.features_for("sample4geo-x-d2s", with_images=True) == schema.RETRIEVER_FEATURES


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("gallery-university1652-x-y", "benchmark/altitude parts"),
        ("sample4geo-university1652-x2y", "direction"),
        ("Sample-u1652-d2s", "retriever name"),
        ("a-b-c-d-e-d2s", "benchmark/altitude parts"),
        ("gallery-", "benchmark name"),
    ],
)
def test_bad_names_say_what_is_accepted(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        ConfigName.parse(bad)
    assert "<retriever>-<bench>[-<alt>]-<d2s|s2d>" in str(err.value)
    with pytest.raises(ValueError, match="direction"):
        schema.retriever_config_name("sample4geo", "u1652", "x2y")


def test_a_new_kind_plugs_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook another config kind uses (as ``embeddings-*`` does): name, parse, features, no other edit."""
    monkeypatch.setattr(schema, "CONFIG_KINDS", dict(CONFIG_KINDS))
    features = Features({"image_id": Value("string"), "caption": Value("string")})
    register_config_kind(ConfigKind("captions", "captions", has_retriever=True, has_direction=False,
                                    features=features))
    name = ConfigName("captions", "sues200", 150, retriever="qwen2vl")
    assert str(name) == "captions-qwen2vl-sues200-150" and ConfigName.parse(str(name)) == name
    assert schema.config_kind(str(name)) == "captions"
    assert schema.features_for(str(name)) == features and schema.config_suffix(str(name)) == "sues200-150"
    with pytest.raises(ValueError, match="reserved"):  # a kind's prefix is no longer a legal retriever name
        schema.retriever_config_name("captions", "sues200", "d2s")
    with pytest.raises(ValueError, match="already registered"):
        register_config_kind(ConfigKind("captions2", "captions", True, False, features))


def test_embeddings_features_need_the_dimension() -> None:
    f = schema.features_for("embeddings-sample4geo-u1652", embedding_dim=8, embedding_dtype="float16")
    assert f == schema.embeddings_features(8, "float16")
    with pytest.raises(ValueError, match="embedding_dim"):
        schema.features_for("embeddings-sample4geo-u1652")
