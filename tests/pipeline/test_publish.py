"""Publishing: a folder is replaced only when it is provably an earlier bundle holding nothing else,
the check comes before any stage runs, and a failed write leaves nothing behind."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_distill.errors import FileSystemError, InputFileError
from edge_distill.pipeline.publish import check_out, publish
from tests import handmade
from tests.test_cli import assert_user_error, invoke


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_web_app_with_its_own_manifest_is_never_replaced(tmp_path):
    app = tmp_path / "webapp"
    (app / "src").mkdir(parents=True)
    (app / "manifest.json").write_text(json.dumps({"name": "My App", "start_url": "/"}))
    (app / "index.html").write_text("<html></html>")
    (app / "src" / "app.js").write_text("run()")
    before = snapshot(app)
    result = invoke("build", "--profile", "rpi4", "--out", str(app), "--cache-dir", str(tmp_path / "cache"))
    assert_user_error(result, 3, "exists and is not an edge-distill bundle", "nothing was changed")
    assert snapshot(app) == before
    assert not (tmp_path / "cache").exists()  # refused before the first stage


def test_a_bundle_the_user_added_files_to_is_not_replaced(tmp_path):
    bundle = handmade.bundle(tmp_path / "dist")
    (bundle / "integration-notes.md").write_text("how we call it")
    before = snapshot(bundle)
    result = invoke("build", "--profile", "rpi4", "--out", str(bundle), "--cache-dir", str(tmp_path / "cache"))
    assert_user_error(result, 3, "does not list: integration-notes.md")
    assert snapshot(bundle) == before and not (tmp_path / "cache").exists()


def test_an_earlier_bundle_is_replaced_whole(tmp_path):
    old = handmade.bundle(tmp_path / "old")
    (old / "device_benchmark.json").write_text("{}")  # written by `build --remote` beside the manifest's files
    check_out(old)
    new = handmade.bundle(tmp_path / "new")
    (new / "golden.json").write_text("{}")
    publish({name: new / name for name in ("manifest.json", "model.onnx", "golden.json")}, old)
    assert sorted(p.name for p in old.iterdir()) == ["golden.json", "manifest.json", "model.onnx"]
    assert (old / "golden.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]  # no staging folders left


def test_a_folder_without_our_marker_is_refused_even_when_it_has_a_files_table(tmp_path):
    out = tmp_path / "look-alike"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"schema_version": 1, "files": {}, "generator": {"name": "other"}}))
    with pytest.raises(InputFileError, match="not an edge-distill bundle"):
        check_out(out)


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(small_disk, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 1024 * 1024)
    with pytest.raises(FileSystemError, match=f"{small_disk} \\(while writing model.onnx\\): No space left on device"):
        publish({"model.onnx": big}, small_disk / "dist")  # the full folder named, not big.bin being read
    assert list(small_disk.iterdir()) == []  # the staging folder went with the failure
    result = invoke("data", "--profile", "rpi4", "--cache-dir", str(small_disk / "cache"))
    assert_user_error(result, 3, "No space left on device", "free space")


def test_a_read_only_disk_is_refused_before_any_stage(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = invoke("build", "--profile", "rpi4", "--out", str(small_disk / "dist"),
                    "--cache-dir", str(small_disk.parent / "cache"))
    assert_user_error(result, 3, f"cannot write in {small_disk}")
    assert not (small_disk.parent / "cache").exists()
    result = invoke("data", "--profile", "rpi4", "--cache-dir", str(small_disk / "cache"))
    assert_user_error(result, 3, "cache folder", "Read-only file system")


def test_copying_a_bundle_elsewhere_keeps_it_replaceable(tmp_path):
    bundle = handmade.bundle(tmp_path / "dist")
    copy = Path(shutil.copytree(bundle, tmp_path / "copy"))
    check_out(copy)  # ours: nothing raised


def test_a_killed_publish_leaves_nothing_that_outlives_the_next(tmp_path):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs: a build killed mid-publish
    leftover = tmp_path / f".dist.tmp-{gone.pid}-abc"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"half")
    new = handmade.bundle(tmp_path / "new")
    publish({name: new / name for name in ("manifest.json", "model.onnx")}, tmp_path / "dist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "new"]


def test_an_out_or_cache_inside_a_bundle_is_refused_before_anything_is_written(tiny_bundle, tmp_path):
    bundle = tmp_path / "dist"
    shutil.copytree(tiny_bundle, bundle)
    before = snapshot(bundle)
    with pytest.raises(InputFileError, match="inside the edge-distill bundle"):
        check_out(bundle / "again")
    result = invoke("data", "-p", "rpi4", "--cache-dir", str(bundle / "cache"))
    assert_user_error(result, 3, "inside the edge-distill bundle", "choose a --cache-dir outside it")
    assert snapshot(bundle) == before and invoke("verify", str(bundle)).exit_code == 0
