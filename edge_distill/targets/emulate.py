"""Run a bundle on aarch64 onnxruntime under qemu user-mode emulation, without a device.

The userland is an arm64 Python 3.11 unpacked from Debian's arm64 packages plus the aarch64
numpy and onnxruntime wheels from PyPI, prepared once by `edge-distill emulator setup` (the only
step that downloads) and cached. onnxruntime reads /proc/cpuinfo to pick its kernels and crashes on
the host's x86 one under qemu-user; qemu resolves absolute paths inside the `-L` root first, so the
root carries an ARM cpuinfo for the profile's core. Emulated timing is not device timing: this
checks outputs only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from edge_distill.errors import EmulationError

DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "zlib1g", "libexpat1",
    "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libstdc++6", "libgcc-s1", "libsqlite3-0", "libuuid1",
    "libncursesw6", "libtinfo6", "libreadline8",
)
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
# The Arm cores the profiles name: their /proc/cpuinfo "CPU part", and qemu's model of the core.
# onnxruntime picks its kernels by the CPU's features (getauxval's HWCAP), which qemu reports for
# the model it runs: its default, "max", has SME and i8mm, which no Pi has, and there the dynamic
# int8 kernels of a real MiniLM student gave embeddings 0.55 in cosine from float's while a
# Cortex-A72 model reproduced the host's to 3e-8.
CPU_MODELS = {"Cortex-A72": ("0xd08", "cortex-a72"), "Cortex-A76": ("0xd0b", "cortex-a76"),
              "Cortex-A53": ("0xd03", "cortex-a53")}
QEMU = "qemu-aarch64-static"

# Each row of every input:NAME array is one run; outputs are stacked as output:NAME.
# The session comes from runner.py, copied beside the model as `bench --remote` copies it.
GUEST_SCRIPT = """
import json, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import numpy as np, onnxruntime as ort
from runner import create_session
session = create_session(sys.argv[1])
arrays = np.load(sys.argv[2])
names = [key.split(":", 1)[1] for key in arrays.files]
outputs = [o.name for o in session.get_outputs()]
runs = [session.run(outputs, {name: np.array(arrays["input:" + name][i]) for name in names})
        for i in range(len(arrays[arrays.files[0]]))]
np.savez(sys.argv[3], **{"output:" + name: np.stack([run[k] for run in runs]) for k, name in enumerate(outputs)})
import ctypes  # the CPU features onnxruntime chose its kernels by (AT_HWCAP = 16, AT_HWCAP2 = 26)
getauxval = ctypes.CDLL(None).getauxval
getauxval.restype = ctypes.c_ulong
hwcap, hwcap2 = getauxval(16), getauxval(26)
print(json.dumps({"onnxruntime": ort.__version__, "numpy": np.__version__, "dotprod": bool(hwcap >> 20 & 1),
                  "i8mm": bool(hwcap2 >> 13 & 1), "sme": bool(hwcap2 >> 23 & 1)}))
"""


def default_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "edge-distill" / "aarch64-userland"


def userland_versions() -> dict[str, str]:
    """The guest gets the host's numpy and onnxruntime versions, so outputs compare like for like."""
    import onnxruntime

    return {"python": "3.11", "numpy": np.__version__, "onnxruntime": onnxruntime.__version__}


def setup_userland(root: Path, progress=lambda _: None) -> Path:
    """Download and unpack the arm64 userland into `root` (once per version set)."""
    marker = root / "edge-distill-userland.json"
    if marker.is_file() and json.loads(marker.read_text()) == userland_versions():
        progress(f"aarch64 userland already prepared in {root}")
        return root
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise EmulationError(f"'{tool}' not found: the userland is built from Debian's arm64 packages",
                                 "run on a Debian or Ubuntu machine")
    staging = Path(tempfile.mkdtemp(prefix=".userland-", dir=_mkdir(root.parent)))
    try:
        work = staging / "work"
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "debs").mkdir()
        apt = ["apt-get", "-oAPT::Architecture=arm64", "-oAPT::Architectures=arm64",
               f"-oDir::State::Lists={work / 'lists'}", f"-oDir::Cache={work / 'cache'}"]
        progress("downloading Debian's arm64 package index and Python 3.11 packages")
        _check([*apt, "update", "-qq"], "apt-get update (arm64)")
        _check([*apt, "download", *DEBIAN_PACKAGES], "apt-get download (arm64)", cwd=work / "debs")
        guest = staging / "root"
        for deb in sorted((work / "debs").glob("*.deb")):
            _check(["dpkg", "-x", str(deb), str(guest)], f"dpkg -x {deb.name}")
        versions = userland_versions()
        progress(f"downloading aarch64 wheels: numpy {versions['numpy']}, onnxruntime {versions['onnxruntime']}")
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        _check([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                "3.11", "--implementation", "cp", *platforms, "-d", str(work / "wheels"),
                f"numpy=={versions['numpy']}", f"onnxruntime=={versions['onnxruntime']}"], "pip download (aarch64)")
        site = _mkdir(guest / "usr" / "lib" / "python3" / "dist-packages")  # where Debian's python3.11 looks
        for wheel in (work / "wheels").glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        shutil.rmtree(work)
        (guest / "edge-distill-userland.json").write_text(json.dumps(versions))
        if root.exists():
            shutil.rmtree(root)
        guest.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"aarch64 userland ready in {root}")
    return root


def run_emulated(model: Path, inputs: dict[str, np.ndarray], cpu: str, root: Path | None = None
                 ) -> tuple[dict[str, np.ndarray], dict]:
    """({output:NAME: stacked outputs}, the guest's versions): `model` run by aarch64 onnxruntime
    under qemu once per row of the `inputs` arrays (input:NAME, one row per run)."""
    from edge_distill.device import runner

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "inputs.npz", **inputs)
        shutil.copyfile(model, tmp / "model.onnx")
        shutil.copyfile(runner.__file__, tmp / "runner.py")
        done = _run_guest(cpu, root, ["-c", GUEST_SCRIPT, str(tmp / "model.onnx"), str(tmp / "inputs.npz"),
                                      str(tmp / "outputs.npz")])
        with np.load(tmp / "outputs.npz") as produced:
            return dict(produced), json.loads(done.stdout.strip().splitlines()[-1])


def generate_emulated(model: Path, prompts: list[list[int]], expected: list[list[int]], atol: float, cpu: str,
                      root: Path | None = None) -> tuple[list[dict], dict]:
    """(each prompt decoded along its `expected` greedy tokens, as device/decoder.follow reports it;
    the guest's versions): device/decoder.py, as it is copied to a device, run by aarch64
    onnxruntime under qemu."""
    from edge_distill.device import decoder, runner

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for module in (decoder, runner):
            shutil.copyfile(module.__file__, tmp / Path(module.__file__).name)
        shutil.copyfile(model, tmp / "model.onnx")
        done = _run_guest(cpu, root, [str(tmp / "decoder.py"), str(tmp / "model.onnx"), "--prompt-ids",
                                      ";".join(",".join(map(str, p)) for p in prompts), "--new-tokens", "1",
                                      "--expect-ids", ";".join(",".join(map(str, e)) for e in expected),
                                      "--atol", repr(atol), "--json"])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return result["golden"], {"onnxruntime": result["onnxruntime"]}


def _run_guest(cpu: str, root: Path | None, argv: list[str]) -> subprocess.CompletedProcess:
    """The userland's python3.11 with `argv`, under qemu as `cpu` (a CPU_MODELS key)."""
    root = root or default_root()
    if shutil.which(QEMU) is None:
        raise EmulationError(f"{QEMU} not found", "install it: apt-get install qemu-user-static")
    if not (root / "edge-distill-userland.json").is_file():
        raise EmulationError(f"no aarch64 userland in {root}", "prepare it once: edge-distill emulator setup")
    if cpu not in CPU_MODELS:
        raise EmulationError(f"device.cpu '{cpu}' is not an Arm core qemu can emulate here",
                             f"known: {', '.join(CPU_MODELS)}")
    part, qemu_cpu = CPU_MODELS[cpu]
    _mkdir(root / "proc")
    (root / "proc" / "cpuinfo").write_text("".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 3\n\n" for i in range(4)))
    done = subprocess.run([QEMU, "-cpu", qemu_cpu, "-L", str(root), str(root / "usr" / "bin" / "python3.11"), *argv],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise EmulationError(f"the emulated run failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done


def verify_emulated(bundle: Path, root: Path | None = None) -> dict:
    """The bundle's golden inputs on aarch64 vs the model's reference arithmetic on this host (QDQ in
    float), for every kind of bundle: each output within the golden tolerance, and for a
    classifier's logits the same top-1."""
    from edge_distill.bundle.reader import Bundle
    from edge_distill.device.runner import create_session, golden_feeds, run_feeds

    opened = Bundle.open_checked(bundle)
    manifest, golden, model = opened.manifest, opened.golden(), opened.model_path
    device = opened.section("profile", "device")
    cpu = device["cpu"] if isinstance(device, dict) and device.get("arch") == "aarch64" else "Cortex-A72"
    # The model's own arithmetic, QDQ computed in float, is what aarch64's exact int8 kernels reproduce.
    # This host's int8 kernels are no reference: x86-64 without VNNI sums u8 x s8 pairs in saturating
    # int16 (MLAS's AVX2 path), off by up to 0.08 on the tiny bundle where aarch64 is off by 0.
    if opened.kind == "generation":
        return _verify_generation_emulated(bundle, root, cpu)
    session = create_session(model, config={"session.disable_quant_qdq": "1"})
    if opened.any_io:
        feeds, _ = golden_feeds(golden)
        inputs = {key: value for key, value in golden.items() if key.startswith("input:")}
        atol = {name: float(value) for name, value in manifest["golden"]["tolerance"]["atol"].items()}
        samples = len(feeds)
    else:  # a classifier's golden batch is one run
        feeds = [{session.get_inputs()[0].name: golden["inputs"]}]
        inputs = {f"input:{name}": value[None] for name, value in feeds[0].items()}
        atol = {session.get_outputs()[0].name: float(manifest["golden"]["tolerance"]["logits_atol"])}
        samples = len(golden["inputs"])
    emulated, guest = run_emulated(model, inputs, cpu, root)
    host = run_feeds(session, feeds)
    diffs = {name: float(np.abs(emulated[f"output:{name}"].astype(np.float64) - host[name]).max()) for name in atol}
    report = {"bundle": str(bundle), "emulated_cpu": cpu, "guest": guest, "precision": manifest["model"]["precision"],
              "samples": samples,
              "max_abs_diff": diffs, "tolerance": atol, "passed": all(diffs[n] <= atol[n] for n in atol),
              "note": "outputs only: emulated timing is not device timing"}
    if not opened.any_io:
        name = next(iter(atol))
        agree = int((emulated[f"output:{name}"][0].argmax(1) == host[name][0].argmax(1)).sum())
        report |= {"top1_agree": agree, "passed": report["passed"] and agree == samples}
    return report


def _verify_generation_emulated(bundle: Path, root: Path | None, cpu: str) -> dict:
    """A generator's golden prompts decoded along their stored greedy tokens on aarch64: each step's
    choice the stored one, or within the logit tolerance of it (device/decoder.follow)."""
    from edge_distill.bundle.kinds.generation import open_generator
    from edge_distill.device.decoder import describe_divergence

    generator = open_generator(bundle)
    prompts = generator.golden_prompts()
    expected = generator.golden["greedy_ids"].tolist()
    rows, guest = generate_emulated(generator.bundle.model_path, prompts, expected, generator.atol, cpu, root)
    same = sum(row["same"] for row in rows)
    failed = [describe_divergence(i, row, generator.atol) for i, row in enumerate(rows) if not row["same"]]
    return {"bundle": str(bundle), "emulated_cpu": cpu, "guest": guest, "samples": len(prompts), "greedy_same": same,
            "near_ties": sum(row["same"] and not row["exact"] for row in rows), "failures": failed,
            "passed": not failed, "note": "outputs only: emulated timing is not device timing"}


def emulated_check(bundle: Path):
    """`verify_emulated` as one of `verify`'s checks."""
    from edge_distill.bundle.integrity import Check

    emulated = verify_emulated(bundle)
    if "greedy_same" in emulated:
        return Check(f"aarch64 ({emulated['emulated_cpu']}, emulated)", emulated["passed"],
                     f"{emulated['greedy_same']}/{emulated['samples']} golden prompts generate their stored greedy "
                     "tokens" + (f" ({emulated['near_ties']} through a near tie)" if emulated["near_ties"] else "")
                     + (f"; {emulated['failures'][0]}" if emulated["failures"] else "")
                     + f"; onnxruntime {emulated['guest']['onnxruntime']}; outputs only, no timing")
    agree = (f"top-1 {emulated['top1_agree']}/{emulated['samples']} agree with the model's reference arithmetic "
             "here, " if "top1_agree" in emulated else f"{emulated['samples']} golden samples, ")
    diffs = ", ".join(f"{name} {diff:.3g} (tolerance {emulated['tolerance'][name]:.3g})"
                      for name, diff in emulated["max_abs_diff"].items())
    return Check(f"aarch64 ({emulated['emulated_cpu']}, emulated)", emulated["passed"],
                 f"{agree}max abs diff {diffs}; onnxruntime {emulated['guest']['onnxruntime']}; outputs only, no timing")


def _check(argv: list[str], what: str, cwd: Path | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        raise EmulationError(f"{what} failed: {(done.stderr or done.stdout).strip()[-300:]}",
                             "check that the package registries are reachable")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
