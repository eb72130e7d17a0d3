"""bundle/reader.py: how a bundle's kind is told, the one place readers ask."""

from pathlib import Path

import pytest

from edge_distill.bundle.reader import Bundle
from edge_distill.bundle.predict import PREDICTORS


@pytest.mark.parametrize("manifest, kind", [
    ({"golden": {"kind": "generation"}, "generation": {}}, "generation"),
    ({"golden": {"kind": "io"}, "text": {"max_length": 8}}, "text"),
    ({"golden": {"kind": "io"}}, "io"),
    ({"golden": {"npz": "golden.npz"}}, "classifier"),  # build's bundles name no golden kind
])
def test_each_kind_is_told_from_its_golden_vectors_and_sections(manifest, kind):
    assert Bundle(Path("b"), manifest).kind == kind


def test_every_kind_but_a_generator_has_a_predictor():
    assert set(PREDICTORS) == {"text", "io", "classifier"}
