"""Typed errors: what a user reads names what they chose."""

import errno

from edge_distill.errors import FileSystemError


def test_a_full_disk_names_the_folder_the_user_chose_not_a_staging_file():
    error = OSError(errno.ENOSPC, "No space left on device", "/home/u/.edge-distill/cache/export/.tmp-42-x1/s.onnx")
    rendered = FileSystemError.from_os_error(error)
    assert rendered.message == "/home/u/.edge-distill/cache/export (while writing s.onnx): No space left on device"
    assert "free space" in rendered.hint
    beside_out = OSError(errno.ENOSPC, "No space left on device", "/data/.rpi4.tmp-7-ab/model.onnx")
    assert FileSystemError.from_os_error(beside_out).message.startswith("/data (while writing model.onnx)")
