"""The stage cache: a hit provably skips the stage; a changed param reruns only what follows it."""

import json
import os
from pathlib import Path

import pytest

from edge_distill.pipeline import registry
from edge_distill.pipeline.stages.data import DataStage
from edge_distill.pipeline.build import plan, run_pipeline
from edge_distill.hashing import hash_path
from edge_distill.pipeline.cache import StageCache
from tests.conftest import tiny_config
from tests.test_cli import assert_user_error, invoke


@pytest.fixture
def spy(monkeypatch):
    """Records which stages actually ran, while still running them."""
    ran = []
    for stage in registry.STAGES:
        original = stage.run

        def recording(self, inputs, out, progress, _original=original):
            ran.append(self.name)
            return _original(self, inputs, out, progress)

        monkeypatch.setattr(stage, "run", recording)
    return ran


def test_unchanged_build_runs_no_stage(tiny_cache, spy):
    run = run_pipeline(tiny_config(), tiny_cache)
    assert spy == []
    assert all(step.cached for step in run.steps) and len(run.steps) == len(registry.STAGES)


def test_changed_quantize_setting_reruns_only_downstream(tiny_cache, spy):
    run_pipeline(tiny_config("quantize.per_channel=false"), tiny_cache)
    assert spy == ["quantize", "describe", "benchmark", "package"]


@pytest.mark.slow  # 5 s: a rebuild from the distill stage on (the keys and hits are covered fast beside it)
def test_changed_distill_setting_keeps_data_and_teacher(tiny_cache, spy):
    run_pipeline(tiny_config("distill.alpha=0.5"), tiny_cache)
    assert spy == ["distill", "export", "simplify", "quantize", "describe", "benchmark", "package"]


@pytest.mark.slow  # 5 s: a whole tiny build again (cache hits and misses are covered fast beside it)
def test_force_reruns_every_stage(tiny_cache, spy):
    run_pipeline(tiny_config(), tiny_cache, force=True)
    assert spy == list(registry.STAGE_NAMES)


def test_user_file_change_invalidates_the_stage(tmp_path, spy):
    import numpy as np

    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((40, 8, 8)).astype(np.float32), y=np.arange(40) % 2)
    config = tiny_config(f"data.source='{data}'")
    run_pipeline(config, tmp_path / "cache", target="data")
    run_pipeline(config, tmp_path / "cache", target="data")
    np.savez(data, x=rng.standard_normal((40, 8, 8)).astype(np.float32), y=np.arange(40) % 2)
    run_pipeline(config, tmp_path / "cache", target="data")
    assert spy == ["data", "data"]


def test_plan_skips_stages_whose_outputs_the_user_provides():
    assert [s.name for s in plan("quantize", {"student_fp32.onnx"})] == ["data", "quantize"]
    assert [s.name for s in plan("export", set())] == ["data", "teacher", "distill", "export"]


def test_failed_stage_leaves_no_cache_entry(tmp_path, monkeypatch):
    def explode(self, inputs, out, progress):
        (out / "dataset.npz").write_text("half")
        raise RuntimeError("boom")

    monkeypatch.setattr(DataStage, "run", explode)
    with pytest.raises(RuntimeError, match="boom"):
        run_pipeline(tiny_config(), tmp_path / "cache", target="data")
    assert list((tmp_path / "cache" / "data").iterdir()) == []


def test_hash_path_covers_folder_names_and_contents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"1")
    first = hash_path(tmp_path / "a")
    (tmp_path / "a" / "x.png").rename(tmp_path / "a" / "y.png")
    assert hash_path(tmp_path / "a") != first


def test_every_artifact_has_one_producer_and_every_input_a_producer():
    from edge_distill.pipeline.registry import ARTIFACTS, PRODUCER

    assert len(ARTIFACTS) == len(set(ARTIFACTS))
    for stage in registry.STAGES:
        for name in stage.inputs:
            assert STAGE_ORDER[PRODUCER[name].name] < STAGE_ORDER[stage.name], (stage.name, name)


STAGE_ORDER = {name: i for i, name in enumerate(registry.STAGE_NAMES)}



def test_a_truncated_cache_file_reruns_its_stage_and_says_so(tmp_path, spy):
    from tests.test_cli import invoke

    args = ["data", "--profile", "rpi4", "--cache-dir", str(tmp_path / "cache"), "--json"]
    dataset = Path(json.loads(invoke(*args).stdout)["outputs"]["dataset.npz"])
    dataset.write_bytes(dataset.read_bytes()[:100])  # a disk that filled up, a killed copy
    again = invoke(*args)
    assert again.exit_code == 0 and spy == ["data", "data"]
    assert f"the cached result is damaged ({dataset} differs from the hash recorded" in again.stderr
    assert dataset.stat().st_size > 100
    invoke(*args)
    assert spy == ["data", "data"]  # the repaired entry is trusted again


def test_staging_folders_of_a_killed_build_are_removed_by_the_next(tmp_path):
    import subprocess

    cache = StageCache(tmp_path / "cache")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    orphan = tmp_path / "cache" / "data" / f".tmp-{gone.pid}-abc"
    live = cache.staging("data")  # this process's: a build still under way
    orphan.mkdir()
    (orphan / "dataset.npz").write_bytes(b"half")
    run_pipeline(tiny_config(), tmp_path / "cache", target="data")
    assert not orphan.exists() and live.exists()


def test_cache_info_and_clean(tmp_path):
    import time

    cache = StageCache(tmp_path / "cache")
    run_pipeline(tiny_config(), cache.root, target="data")
    run_pipeline(tiny_config("data.val_fraction=0.2"), cache.root, target="data")
    info = cache.info()
    assert info["entries"] == 2 and info["stages"]["data"]["entries"] == 2 and info["size_bytes"] > 0
    old, recent = cache.entries()
    month_ago = time.time() - 30 * 86400
    os.utime(old.path / "stage.json", (month_ago, month_ago))
    report = cache.clean(unused_days=7)
    assert report["removed_entries"] == [f"data/{old.key}"] and recent.path.exists()
    (recent.path / "dataset.json").write_text("edited")
    assert cache.clean()["removed_entries"] == [f"data/{recent.key}"]  # damaged entries go by default
    assert cache.info()["entries"] == 0


def test_an_entry_that_lost_its_record_is_not_provably_ours_and_is_rebuilt_not_cleaned(tmp_path):
    cache = StageCache(tmp_path / "cache")
    run_pipeline(tiny_config(), cache.root, target="data")
    (entry,) = cache.entries()
    (entry.path / "stage.json").unlink()  # half deleted by hand: its own marker is gone
    assert cache.info()["entries"] == 0
    assert cache.clean()["removed_entries"] == [] and (entry.path / "dataset.npz").is_file()
    run = run_pipeline(tiny_config(), cache.root, target="data")
    assert not run.steps[0].cached and (entry.path / "stage.json").is_file()  # the same key, written whole again


def _tree(folder: Path) -> dict[str, bytes | str]:
    return {p.relative_to(folder).as_posix(): (os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file()
                                               else "dir") for p in sorted(folder.rglob("*"))}


def test_clean_and_info_refuse_a_folder_that_is_not_a_cache_and_leave_it_byte_for_byte(tmp_path):
    home = tmp_path / "somefolder"
    (home / "photos" / "2024").mkdir(parents=True)
    (home / "photos" / "2024" / "a.jpg").write_bytes(b"\xff\xd8 jpeg")
    (home / "code" / "src").mkdir(parents=True)
    (home / "code" / "src" / "stage.json").write_text("{}")  # a user's file that happens to share a name
    before = _tree(home)
    for args in (["cache", "clean"], ["cache", "clean", "--all"], ["cache", "clean", "--older-than", "0"],
                 ["cache", "info"]):
        result = invoke(*args, "--cache-dir", str(home))
        assert_user_error(result, 3, "not an edge-distill cache", "CACHEDIR.TAG")
    assert _tree(home) == before
    # A build refuses to write its stages there too.
    result = invoke("data", "-p", "rpi4", "--cache-dir", str(home))
    assert_user_error(result, 3, "not an edge-distill cache", "nothing was changed")
    assert _tree(home) == before


def test_clean_never_follows_a_symlink_out_of_the_cache(tmp_path):
    cache = StageCache(tmp_path / "cache")
    run_pipeline(tiny_config(), cache.root, target="data")
    outside = tmp_path / "outside"
    (outside / "keep" / ".tmp-1-x").mkdir(parents=True)  # looks like an orphaned staging folder
    (outside / "keep" / "stage.json").write_text("{}")
    (outside / "entry").mkdir()
    (outside / "entry" / "stage.json").write_text('{"output_sha256": {}}')
    before = _tree(outside)
    (cache.root / "linked-stage").symlink_to(outside, target_is_directory=True)
    (cache.root / "data" / "linked-entry").symlink_to(outside / "entry", target_is_directory=True)
    report = cache.clean(remove_all=True)
    assert len(report["removed_entries"]) == 1 and _tree(outside) == before
    assert (cache.root / "linked-stage").is_symlink() and (cache.root / "data" / "linked-entry").is_symlink()


def test_cache_info_on_a_file_is_an_error_not_an_empty_cache(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke("cache", "info", "--cache-dir", str(tmp_path / "notes.txt"))
    assert_user_error(result, 3, "notes.txt: not a folder")


def test_a_cache_an_older_edge_distill_made_is_adopted_by_the_next_build(tmp_path):
    cache = StageCache(tmp_path / "cache")
    run_pipeline(tiny_config(), cache.root, target="data")
    (cache.root / "CACHEDIR.TAG").unlink()  # as a cache made before the marker looks
    with pytest.raises(Exception, match="not an edge-distill cache"):
        cache.clean()
    run = run_pipeline(tiny_config(), cache.root, target="data")
    assert run.steps[0].cached and StageCache(cache.root).is_ours()
    assert StageCache(cache.root).clean(remove_all=True)["removed_entries"]


def test_an_upgraded_library_reruns_what_it_made_and_every_manifest_names_the_same_libraries(tmp_path, spy,
                                                                                              monkeypatch):
    """One list (hashing.LIBRARIES) keys the cache and fills the manifests: an upgrade of
    transformers, tokenizers or gguf, which make the text and llm teachers' outputs, reran nothing
    while the key listed only the image build's libraries."""
    from importlib import metadata

    from edge_distill.hashing import LIBRARIES, library_versions

    assert {"transformers", "tokenizers", "gguf", "onnxruntime-genai"} <= set(LIBRARIES)
    run_pipeline(tiny_config(), tmp_path / "cache", target="data")
    version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "99.0" if name == "tokenizers" else version(name))
    assert library_versions()["tokenizers"] == "99.0"
    run_pipeline(tiny_config(), tmp_path / "cache", target="data")
    assert spy == ["data", "data"]


def test_a_bundle_records_the_one_library_list(tiny_bundle):
    from edge_distill.hashing import library_versions

    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["versions"] == library_versions()
