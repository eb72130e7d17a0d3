"""The library entry points: what they publish, and what they refuse to overwrite."""

import pytest

from edge_distill.api import sequence_distillation
from edge_distill.distill.sequence_settings import SequenceSettings
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


@pytest.mark.parametrize("command, entry", [("text", "text_bundle"), ("llm", "generator_bundle")])
def test_the_cli_and_the_api_make_the_same_settings_from_a_profile(command, entry, monkeypatch, tmp_path):
    """The thread count is resolved in the settings, once: through the API, text and llm timed at 2
    threads where the CLI took the profile's (issue 36)."""
    import dataclasses

    from edge_distill import api
    from edge_distill.config import load_config
    from edge_distill.device.runner import usable_threads
    from edge_distill.lm.settings import LMBuildSettings
    from edge_distill.text.settings import TextBuildSettings
    from tests.test_cli import invoke

    given = {}

    def capture(settings, *args, **kwargs):
        given["settings"] = settings
        raise SystemExit(0)

    monkeypatch.setattr(api, entry, capture)
    invoke(command, "--profile", "cuda", "--out", str(tmp_path / "out"))  # 1 thread: the old default was 2
    profile = load_config("cuda")
    made = TextBuildSettings(profile=profile) if command == "text" else LMBuildSettings(profile=profile)
    assert dataclasses.asdict(given["settings"]) == dataclasses.asdict(made)
    assert made.threads == usable_threads(profile.benchmark.threads)
    training = [made.distill, made.fine_tune] if command == "text" else [made.training]
    assert {t.threads for t in training} == {made.threads}


def test_the_tool_commands_library_calls_answer_without_writing(tmp_path):
    from edge_distill import api
    from edge_distill.config import load_config
    from edge_distill.errors import ConfigError

    info = api.cache_info(tmp_path / "cache")
    assert info["entries"] == 0 and not (tmp_path / "cache").exists()  # reading a cache never makes one
    assert "rpi4" in api.profiles() and api.profile("rpi4")["device"]["arch"] == "aarch64"
    assert set(api.profile("rpi4")) == {"name", "device", "export", "quantize", "benchmark", "budget"}
    with pytest.raises(ConfigError, match="only --measure runs the model"):
        api.estimate(tmp_path / "m.onnx", load_config("rpi4"), calibration=tmp_path / "c.npz")

