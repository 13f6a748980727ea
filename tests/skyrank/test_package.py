"""The package-level entry points the README and the dataset card show."""

from __future__ import annotations

import pytest

import skyrank


@pytest.mark.parametrize("name", ["build_dataset", "validate_dataset", "publish_dataset", "load_skyrank"])
def test_entry_points_are_importable_from_the_package(name):
    assert callable(getattr(skyrank, name))


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError):
        skyrank.not_a_thing  # noqa: B018
