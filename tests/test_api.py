"""The library entry points: what they publish, and what they refuse to overwrite."""

import pytest

from edge_distill.api import sequence_distillation
from edge_distill.distill.sequence import SequenceSettings
from edge_distill.errors import DataError, InputFileError


def test_sequence_output_never_replaces_a_folder_that_is_not_one(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(InputFileError, match="exists and is not an edge-distill sequence-distillation output"):
        sequence_distillation(tmp_path / "out", SequenceSettings(steps=1), cache_dir=tmp_path / "cache")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_too_little_text_leaves_nothing_behind(tmp_path):
    (tmp_path / "t.txt").write_text("short")
    with pytest.raises(DataError, match="5 characters"):
        sequence_distillation(tmp_path / "out", SequenceSettings(steps=1), tmp_path / "t.txt", cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "t.txt"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["CACHEDIR.TAG", "sequence"]
    assert not list((tmp_path / "cache" / "sequence").iterdir())  # no staging left, no entry
