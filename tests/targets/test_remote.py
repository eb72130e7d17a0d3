"""Remote benchmarks through a real OpenSSH server on 127.0.0.1 with its own host key."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_distill.targets.remote import bench_bundle, run_remote_benchmark
from edge_distill.errors import RemoteError
from tests.sshd import INSTALLED, free_port, keygen

pytestmark = pytest.mark.ssh
if not INSTALLED:
    pytest.skip("OpenSSH server not installed (apt-get install openssh-server; .ci/run does)", allow_module_level=True)


def leftover_folders() -> set[str]:
    return {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("edge-distill.*")}


def test_bench_on_the_device_reports_its_figures_and_cleans_up(server, tiny_bundle):
    before = leftover_folders()
    report = bench_bundle(tiny_bundle, server.target())
    assert report["where"] == "device" and report["golden_top1_agreement"] == 1.0
    assert report["device"]["arch"] and report["device"]["onnxruntime"] and report["device"]["cores"] >= 1
    assert report["latency_ms"]["p50"] > 0 and report["threads"] == 4  # the profile's threads on the device
    assert leftover_folders() == before


def test_a_bundle_of_any_inputs_is_benched_on_the_device_with_every_golden_output(server, tmp_path):
    """An `edge-distill optimize` bundle (three inputs, one an int64 scalar): the device runs the
    golden feeds and every output lands within the bundle's tolerance."""
    from edge_distill.config import load_config
    from edge_distill.api import optimize_bundle
    from tests import handmade

    optimize_bundle(load_config("x86-avx512", None, ["quantize.search_min_seconds=0.05"]),
                    handmade.three_input_model(tmp_path / "vad.onnx"), handmade.three_input_samples(tmp_path / "s.npz"),
                    tmp_path / "bundle", cache_dir=tmp_path / "cache", shapes={}, min_snr_db=20.0)
    report = bench_bundle(tmp_path / "bundle", server.target())
    assert report["where"] == "device" and report["golden_within_tolerance"] and report["batch"] == 1
    assert set(report["golden_max_abs_diff"]) == {"scores", "state_out"} and report["latency_ms"]["p50"] > 0


def test_optimize_times_float_and_int8_on_the_device_at_each_thread_count(server, tmp_path):
    """rpi4 (aarch64) from this x86 host: with --remote the candidates are timed on the device, at
    1, 2 and 4 threads, and the fastest within budget ships with its thread count, which `bench`
    then uses."""
    from tests import handmade
    from tests.test_cli import invoke

    result = invoke("optimize", str(handmade.three_input_model(tmp_path / "vad.onnx")), "-p", "rpi4",
                    "--calibration", str(handmade.three_input_samples(tmp_path / "s.npz")),
                    "--set", "quantize.search_min_seconds=0.05",
                    "--remote", "device", "--ssh-config", str(server.root / "ssh_config"),
                    "--remote-python", sys.executable, "--out", str(tmp_path / "bundle"), "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    measurement = manifest["measurement"]
    assert measurement["where"] == "device" and "measured on the device (device)" in measurement["measured_on"]
    assert {(row["variant"], row["threads"]) for row in measurement["candidates"]} == \
        {(variant, threads) for variant in ("fp32", "int8") for threads in (1, 2, 4)}
    # The project's rule on the measured rows: quicker beyond noise, else the tie to float and fewer threads.
    from edge_distill.measure.speed import quickest_beyond_noise

    shipped, _ = quickest_beyond_noise([row for row in measurement["candidates"]
                                        if row["variant"] == "fp32" or manifest["judgement"]["int8_within_budget"]])
    assert (manifest["model"]["precision"], manifest["runtime"]["intra_op_threads"]) == \
        (shipped["variant"], shipped["threads"])
    assert "on device" in manifest["model"]["why"]
    report = bench_bundle(tmp_path / "bundle", None, overrides={"min_seconds": 0.05, "timed_runs": 5})
    assert report["threads"] == min(shipped["threads"], os.cpu_count())


def test_bench_measures_an_inventory_of_devices_in_parallel_one_row_each(server, tiny_bundle, tmp_path):
    """Two devices, each with its own profile's settings, and one that refuses connections: the two
    are measured side by side, the third is a row with its error, and the command exits non-zero."""
    from tests.test_cli import invoke

    with open(server.root / "ssh_config", "a") as f:
        f.write(f"Host ghost\n  HostName 127.0.0.1\n  Port {free_port()}\n  ConnectTimeout 3\n")
    config = server.root / "ssh_config"
    (tmp_path / "devices.toml").write_text(
        f'[[device]]\nname = "pi"\nhost = "device"\nprofile = "rpi4"\npython = "{sys.executable}"\n'
        f'ssh_config = "{config}"\n\n'
        f'[[device]]\nname = "desk"\nhost = "device"\nprofile = "x86-avx512"\npython = "{sys.executable}"\n'
        f'ssh_config = "{config}"\n\n'
        f'[[device]]\nname = "ghost"\nhost = "ghost"\nssh_config = "{config}"\n')
    result = invoke("bench", str(tiny_bundle), "--devices", str(tmp_path / "devices.toml"), "--min-seconds", "0.2",
                    "--runs", "20", "--json")
    assert result.exit_code == 8, result.output
    rows = {row["where"]: row for row in json.loads(result.stdout)["devices"]}
    assert list(rows) == ["pi", "desk", "ghost"]
    assert rows["pi"]["threads"] == 4 and rows["desk"]["threads"] == 2  # each device's own profile
    assert rows["pi"]["profile"] == "rpi4" and rows["pi"]["golden_top1_agreement"] == 1.0
    assert rows["desk"]["latency_ms"]["runs"] >= 20 and rows["desk"]["settings"]["min_seconds"] == 0.2
    assert "cannot connect" in rows["ghost"]["error"] and "Error: ghost: cannot connect" in result.stderr
    table = invoke("bench", str(tiny_bundle), "--remote", "device", "--remote", "device", "--ssh-config", str(config),
                   "--remote-python", sys.executable, "--min-seconds", "0", "--runs", "5")
    assert table.exit_code == 0, table.output
    assert [line.split()[0] for line in table.stdout.strip().splitlines()] == ["device", "device", "device"]


@pytest.mark.parametrize("inventory, expected", [
    ('[[device]]\nname = "a"\n', "device 1: no host"),
    ('[[device]]\nhost = "pi"\nport = 22\n', "device 1: unknown key(s) port"),
    ('[[device]]\nhost = "-oProxyCommand=x"\n', "device 1: --remote '-oProxyCommand=x'"),
    ('[[device]]\nhost = "pi"\nprofile = "rpi9"\n', "rpi9"),
    ('[[device]]\nhost = "a"\nname = "x"\n[[device]]\nhost = "b"\nname = "x"\n', "device names repeat"),
    ('[devices]\nhost = "pi"\n', "unknown table(s) devices"),
])
def test_a_bad_inventory_is_one_line_naming_the_file(tiny_bundle, tmp_path, inventory, expected):
    from tests.test_cli import invoke

    (tmp_path / "devices.toml").write_text(inventory)
    result = invoke("bench", str(tiny_bundle), "--devices", str(tmp_path / "devices.toml"))
    assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output
    assert str(tmp_path / "devices.toml") in result.output


def test_unknown_host_key_is_refused(server, tiny_bundle):
    (server.root / "known_hosts").write_text("")
    with pytest.raises(RemoteError, match="its host key is not in known_hosts") as e:
        bench_bundle(tiny_bundle, server.target())
    assert "ssh-keyscan" in e.value.hint


def test_changed_host_key_is_refused(server, tiny_bundle):
    keygen(server.root / "other_key")
    server.trust(" ".join((server.root / "other_key.pub").read_text().split()[:2]))
    with pytest.raises(RemoteError, match="the host key changed") as e:
        bench_bundle(tiny_bundle, server.target())
    assert "ssh-keygen -R" in e.value.hint


def test_refused_connection(server, tiny_bundle):
    server.stop()
    with pytest.raises(RemoteError, match=r"device: cannot connect \(.*Connection refused"):
        bench_bundle(tiny_bundle, server.target(connect_timeout_s=3))


def test_device_python_without_onnxruntime(server, tiny_bundle, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    with pytest.raises(RemoteError, match="lacks the 'numpy' package") as e:
        bench_bundle(tiny_bundle, server.target(python=str(tmp_path / "bare" / "bin" / "python")))
    assert "pip install onnxruntime numpy" in e.value.hint


def test_missing_python_and_no_shell_injection(server, tiny_bundle, tmp_path):
    marker = tmp_path / "injected"
    with pytest.raises(RemoteError, match="no python3; touch .* on the device"):
        bench_bundle(tiny_bundle, server.target(python=f"python3; touch {marker}"))
    assert not marker.exists()


def test_server_stopped_mid_run(server, tiny_bundle):
    import numpy as np

    model = tiny_bundle / "model.onnx"
    threading.Timer(4.0, server.stop).start()  # the copy takes well under a second; the run 60 s
    started = time.time()
    with pytest.raises(RemoteError, match="device: the connection failed while running the benchmark"):
        run_remote_benchmark(server.target(), {"model": model}, np.zeros((2, 1, 8, 8), np.float32), ["--min-seconds", "60"])
    assert time.time() - started < 30  # noticed by ssh, not by waiting for the run to end


def test_build_benchmarks_on_the_device_named_on_the_command_line(server, tiny_cache, tmp_path):
    import json

    from click.testing import CliRunner

    from edge_distill.cli import main
    from tests.conftest import TINY

    out = tmp_path / "dist"
    args = ["build", "--profile", "rpi4", "--out", str(out), "--cache-dir", str(tiny_cache), "--remote", "device",
            "--ssh-config", str(server.root / "ssh_config"), "--remote-python", sys.executable, "--json",
            *[a for s in [*TINY, "quantize.search_min_seconds=0.1"] for a in ("--set", s)]]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    device = json.loads(result.stdout)["device_benchmark"]
    assert device["where"] == "device" and device["golden_top1_agreement"] == 1.0
    assert json.loads((out / "device_benchmark.json").read_text())["device"]["cpu"] == device["device"]["cpu"]
    # rpi4 from this x86 host: float and int8 were timed on the device, at 1, 2 and 4 threads.
    manifest = json.loads((out / "manifest.json").read_text())
    selected = manifest["model"]["quantization"]["selected"]
    assert selected["measured"]["where"] == "device" and "on device" in selected["why"]
    assert sorted({row["threads"] for row in selected["measured"]["candidates"]}) == [1, 2, 4]
    assert manifest["runtime"] == {"intra_op_threads": selected["intra_op_threads"],
                                   "why": "fastest of 1, 2, 4 thread(s) measured on device"}
    assert device["threads"] == selected["intra_op_threads"]  # bench runs the model as it ships


def test_build_benchmarks_on_several_devices_one_row_each(server, tiny_cache, tmp_path):
    import json

    from tests.conftest import TINY
    from tests.test_cli import invoke

    out = tmp_path / "dist"
    result = invoke("build", "--profile", "rpi4", "--out", str(out), "--cache-dir", str(tiny_cache),
                    "--remote", "device", "--remote", "device", "--ssh-config", str(server.root / "ssh_config"),
                    "--remote-python", sys.executable, *[a for s in TINY for a in ("--set", s)])
    assert result.exit_code == 0, result.output
    assert "On the devices:" in result.stdout
    rows = json.loads((out / "device_benchmark.json").read_text())["devices"]
    assert len(rows) == 2 and all(row["golden_top1_agreement"] == 1.0 for row in rows)
