"""Benchmark a bundle on a device over SSH with the system's OpenSSH client.

OpenSSH brings the user's ~/.ssh/config, keys and agent. Host keys are always checked against
known_hosts (StrictHostKeyChecking=yes: an unknown or changed key is an error, never accepted);
BatchMode keeps ssh from prompting. Files travel as a tar stream on ssh's stdin (no SFTP server needed);
only fixed file names and a `mktemp` folder reach the remote shell, quoted; the folder is removed
afterwards.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_distill.device import decoder, runner
from edge_distill.device.runner import usable_threads
from edge_distill.errors import ConfigError, RemoteError

RUNNER = Path(runner.__file__)  # copied to the device as it is: it imports no edge_distill
DECODER = Path(decoder.__file__)  # copied beside it for generator bundles: it imports only the runner


@dataclass(frozen=True)
class RemoteTarget:
    destination: str  # "pi@raspberrypi.local", or a Host from the ssh config
    ssh_config: Path | None = None  # default: OpenSSH's own (~/.ssh/config)
    python: str = "python3"
    connect_timeout_s: int = 10
    command_timeout_s: int = 600

    def __post_init__(self):
        # ssh would read "-oProxyCommand=..." as an option: a host never starts with "-".
        if not self.destination or self.destination.startswith("-") or any(c.isspace() for c in self.destination):
            raise ConfigError(f"--remote {self.destination!r}: expected [user@]host, not empty, without spaces, "
                              "not starting with '-'", "give the device's address or a Host from your ssh config")

    def options(self) -> list[str]:
        config = ["-F", str(self.ssh_config)] if self.ssh_config else []
        return [*config, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"ConnectTimeout={self.connect_timeout_s}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"]


def run_remote_benchmark(target: RemoteTarget, models: dict[str, Path], inputs: np.ndarray | dict[str, np.ndarray],
                         runner_args: list[str], progress=lambda _: None) -> dict:
    """Copy the runner, the `models` (name -> file; several are compared side by side) and `inputs`
    (samples of one input, or golden vectors of any inputs by name) to the device, run there, return
    the runner's JSON. On the device each model is NAME.onnx."""
    assert all(re.fullmatch(r"[a-z0-9_]+", name) for name in models), "model names are ours, never a user's"
    inputs_name = "inputs.npz" if isinstance(inputs, dict) else "inputs.npy"
    files = [(f"{name}.onnx", path.read_bytes()) for name, path in models.items()]
    return _run_on_device(target, [*files, ("runner.py", RUNNER.read_bytes()), (inputs_name, _npy_bytes(inputs))],
                          f"runner.py {' '.join(name for name, _ in files)} --inputs {inputs_name} --json "
                          + " ".join(shlex.quote(a) for a in runner_args), progress)


def run_remote_generation(target: RemoteTarget, model: Path, decoder_args: list[str], progress=lambda _: None) -> dict:
    """Copy the decoder (device/decoder.py, with the runner it imports) and `model` to the device,
    generate and time there, return the decoder's JSON. On the device the model is model.onnx."""
    files = [("model.onnx", model.read_bytes()), ("runner.py", RUNNER.read_bytes()), ("decoder.py", DECODER.read_bytes())]
    return _run_on_device(target, files, "decoder.py model.onnx --json " + " ".join(shlex.quote(a) for a in decoder_args),
                          progress)


def _run_on_device(target: RemoteTarget, files: list[tuple[str, bytes]], script: str, progress) -> dict:
    """Check the device's python, copy `files` (fixed names) into a fresh work folder there, run
    `python3 SCRIPT` in it, remove the folder, and return the last line of its output as JSON."""
    python = shlex.quote(target.python)
    probe = _ssh(target, f"{python} -c 'import numpy, onnxruntime' 2>&1; echo \"exit=$?\"", "checking the device's python")
    output, _, status = probe.strip().rpartition("exit=")
    if status == "127":
        raise RemoteError(f"{target.destination}: no {target.python} on the device",
                          "install it (Raspberry Pi OS: sudo apt install python3) or pass --remote-python PATH")
    if "No module named" in output:
        missing = output.split("No module named", 1)[1].split()[0].strip("'\"")
        raise RemoteError(f"{target.destination}: {target.python} lacks the '{missing}' package",
                          f"on the device: {target.python} -m pip install onnxruntime numpy")
    if status != "0":
        raise RemoteError(f"{target.destination}: {target.python} failed: {output.strip()[-200:]}")
    folder = _ssh(target, "mktemp -d -t edge-distill.XXXXXXXX", "creating a work folder").strip()
    remote = shlex.quote(folder)
    try:
        progress(f"copying the model and runner to {target.destination}")
        bundle = io.BytesIO()
        with tarfile.open(fileobj=bundle, mode="w") as tar:  # fixed names only: nothing of ours is parsed there
            for name, data in files:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        # Through ssh's stdin: needs only tar on the device, not an SFTP server.
        _ssh(target, f"tar -xf - -C {remote}", "copying files", stdin=bundle.getvalue())
        progress(f"benchmarking on {target.destination}")
        output = _ssh(target, f"cd {remote} && {python} {script}", "running the benchmark")
    finally:
        try:
            _ssh(target, f"rm -rf {remote}", "removing the work folder")
        except RemoteError:
            pass  # the connection is gone: the error that matters was raised above
    try:
        return json.loads(output.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise RemoteError(f"{target.destination}: the runner printed no result: {output.strip()[-300:]}") from None


def _npy_bytes(inputs: np.ndarray | dict[str, np.ndarray]) -> bytes:
    """.npy bytes of one array, or .npz bytes of named arrays."""
    buffer = io.BytesIO()
    if isinstance(inputs, dict):
        np.savez(buffer, **inputs)
    else:
        np.save(buffer, inputs)
    return buffer.getvalue()


def _ssh(target: RemoteTarget, command: str, doing: str, stdin: bytes = b"") -> str:
    # "--" ends ssh's options: whatever the destination holds, it is read as the destination.
    return _run(["ssh", *target.options(), "--", target.destination, command], target, doing, stdin)


def _run(argv: list[str], target: RemoteTarget, doing: str, stdin: bytes = b"") -> str:
    try:
        raw = subprocess.run(argv, capture_output=True, timeout=target.command_timeout_s, input=stdin)
        done = subprocess.CompletedProcess(argv, raw.returncode, raw.stdout.decode(errors="replace"),
                                           raw.stderr.decode(errors="replace"))
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{target.destination}: no answer within {target.command_timeout_s} s while {doing}",
                          "check the device, or raise --command-timeout") from None
    except FileNotFoundError:
        raise RemoteError(f"'{argv[0]}' not found on this machine", "install the OpenSSH client") from None
    if done.returncode == 255:  # ssh's own failure, not the remote command's
        raise explain_ssh_failure(target.destination, done.stderr, doing)
    if done.returncode != 0:
        raise RemoteError(f"{target.destination}: {doing} failed ({done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


def explain_ssh_failure(destination: str, stderr: str, doing: str) -> RemoteError:
    """One line for each way ssh fails, with what to do about it."""
    host = destination.rsplit("@", 1)[-1]
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return RemoteError(f"{destination}: the host key changed since it was recorded in known_hosts",
                           f"if the device was reinstalled, remove the old key (ssh-keygen -R {host}) and "
                           f"check the new fingerprint before connecting again")
    if "Host key verification failed" in stderr or "No ED25519 host key is known" in stderr \
            or "host key is not known" in stderr.lower():
        return RemoteError(f"{destination}: its host key is not in known_hosts",
                           f"check the device's fingerprint, then trust it: ssh {destination} once, "
                           f"or ssh-keyscan {host} >> ~/.ssh/known_hosts")
    if "Permission denied" in stderr:
        return RemoteError(f"{destination}: the device refused our keys", f"ssh-copy-id {destination}")
    if "Connection refused" in stderr or "timed out" in stderr or "Could not resolve" in stderr \
            or "No route to host" in stderr:
        reason = stderr.strip().splitlines()[-1] if stderr.strip() else "no connection"
        return RemoteError(f"{destination}: cannot connect ({reason})", "check that the device is on and runs sshd")
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "connection lost"
    return RemoteError(f"{destination}: the connection failed while {doing} ({last})",
                       "check the device and the network, then run again")


BENCH_FLAGS = {  # benchmark setting -> the runner's flag
    "providers": "--provider", "threads": "--threads", "batch_size": "--batch", "warmup_runs": "--warmup",
    "timed_runs": "--runs", "min_seconds": "--min-seconds", "cold_start_runs": "--cold-starts",
    "time_limit_s": "--time-limit",
}


def bench_bundle(bundle: Path, target: RemoteTarget | None, progress=lambda _: None,
                 overrides: dict | None = None) -> dict:
    """Latency of a bundle's model on the device (or here, without a target) with the profile's
    settings (`overrides`: BenchmarkConfig field -> value, from the command line), and top-1
    agreement with the bundle's golden vectors there."""
    from edge_distill.bundle.reader import Bundle
    from edge_distill.config import BenchmarkConfig

    opened = Bundle.open_checked(bundle)
    if opened.kind == "generation":
        return bench_generator(bundle, target, progress, overrides)
    golden = opened.golden()
    any_io = opened.any_io
    # The thread count optimize measured fastest, where it chose one; the profile's otherwise.
    chosen = {"threads": opened.manifest["runtime"]["intra_op_threads"]} if "runtime" in opened.manifest else {}
    settings = {"time_limit_s": BenchmarkConfig.time_limit_s, **opened.section("profile", "benchmark"), **chosen,
                **(overrides or {})}
    settings["providers"] = settings["providers"][:1] if isinstance(settings["providers"], list) else [settings["providers"]]
    if target is None:  # this host is not the device: more threads than cores would only measure contention
        settings["threads"] = usable_threads(settings["threads"])
    args = [str(a) for key, flag in BENCH_FLAGS.items()
            for a in (flag, settings[key][0] if key == "providers" else settings[key])]
    model = opened.model_path
    inputs = golden if any_io else golden["inputs"]
    if target is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ("inputs.npz" if any_io else "inputs.npy")
            path.write_bytes(_npy_bytes(inputs))
            result = _run_local(model, path, args)
    else:
        result = run_remote_benchmark(target, {"model": model}, inputs, args, progress)
    report = {"bundle": str(bundle), "where": target.destination if target else "local", "device": result["host"],
              "provider": result["provider"], "threads": result["threads"], "batch": result["batch"],
              "settings": {key: settings[key] for key in BENCH_FLAGS}, "latency_ms": result["latency_ms"],
              "model_sha256": opened.section("model", "sha256")}
    # The golden check fails `bench` as a failed check fails `verify` (commands: exit 1), every kind alike.
    if any_io:  # every output within the bundle's tolerance, on the device
        atol = opened.section("golden", "tolerance", "atol")
        diffs = result["golden_max_abs_diff"]
        failures = [f"output {name}: max abs diff {diff:.3g} over the tolerance {atol[name]:.3g}"
                    for name, diff in diffs.items() if not diff <= atol[name]]
        return report | {"golden_max_abs_diff": diffs, "golden_atol": atol, "golden_within_tolerance": not failures,
                         "golden_samples": opened.section("golden", "count"), "golden_failures": failures,
                         "golden_passed": not failures}
    same = np.asarray(result["top1"]) == golden["top1"]
    failures = [] if same.all() else [f"golden top-1: {int(same.sum())}/{same.size} samples give the stored class"]
    return report | {"golden_top1_agreement": float(same.mean()), "golden_samples": len(golden["top1"]),
                     "golden_failures": failures, "golden_passed": not failures}


def bench_generator(path: Path, target: RemoteTarget | None, progress=lambda _: None, overrides: dict | None = None
                    ) -> dict:
    """A generator bundle on the device (or here), after the kind's cheap checks here
    (bundle/kinds/generation.py): device/decoder.py decodes its golden prompts along their stored greedy
    tokens there (each step's choice the stored one, or within the logit tolerance: a near tie),
    and times prefills of 64 and 256 tokens (those within the bundle's max_length) and the golden
    length's decode steps after them; its peak memory.
    `golden_passed` is False where any prompt diverged beyond the tolerance."""
    from edge_distill.bundle.kinds.generation import open_generator
    from edge_distill.device.decoder import describe_divergence, prompt_lengths

    generator = open_generator(path)
    opened, golden = generator.bundle, generator.golden
    threads = (overrides or {}).get("threads") or opened.manifest["runtime"]["intra_op_threads"]
    if target is None:
        threads = usable_threads(threads)
    prompts = generator.golden_prompts()
    args = ["--prompt-ids", ";".join(",".join(map(str, p)) for p in prompts), "--new-tokens",
            str(golden["greedy_ids"].shape[1]),  # also the decode steps timed after each prompt length
            "--expect-ids", ";".join(",".join(map(str, row)) for row in golden["greedy_ids"].tolist()),
            "--atol", repr(generator.atol), "--threads", str(threads), "--time",
            ",".join(map(str, prompt_lengths(generator.max_length, golden["greedy_ids"].shape[1])))]
    if target is None:
        import sys

        done = subprocess.run([sys.executable, str(DECODER), str(opened.model_path), "--json", *args],
                              capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or ["no message"]
            raise RemoteError(f"the local decoder failed: {lines[-1][-300:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        result = run_remote_generation(target, opened.model_path, args, progress)
    rows = result["golden"]
    failures = [describe_divergence(i, row, generator.atol) for i, row in enumerate(rows) if not row["same"]]
    # The model that ran is the one the manifest describes (a near tie passes any model of tiny logits).
    layers = sum(1 for t in opened.manifest["inputs"] if t["name"].startswith("past_key_values.")) // 2
    if (result["vocab_size"], result["layers"]) != (generator.vocab_size, layers):
        failures.insert(0, f"the model has {result['layers']} layer(s) and {result['vocab_size']:,} logits, the "
                           f"manifest says {layers} and {generator.vocab_size:,}")
    return {"bundle": str(opened.path), "where": target.destination if target else "local",
            "device": result.get("host"), "threads": threads, "generation": result["timing"],
            "peak_rss_mb": result["peak_rss_mb"], "model_sha256": opened.section("model", "sha256"),
            "golden_greedy_same": sum(row["same"] for row in rows), "golden_samples": len(prompts),
            "golden_near_ties": sum(row["same"] and not row["exact"] for row in rows),
            "golden_failures": failures, "golden_passed": not failures}


def time_side_by_side(models: dict[str, Path], feed: dict[str, np.ndarray], threads: list[int], providers: list,
                      seconds_each: float, target: RemoteTarget | None, require_first: bool = True,
                      progress=lambda _: None, time_limit_s: float | None = None) -> dict:
    """Each model at each thread count, timed by the runner's compare_candidates in interleaved
    rounds on one sample: on the device over SSH (with the first provider's name), or here in this
    process (`providers` with their options, as onnxruntime takes them): {"where", "host", "rows":
    [{"variant", "threads", "p50", "p90", "runs"} or {"variant", "threads", "error"}]}. The whole
    comparison stops past `time_limit_s` (runner.TimeLimitExceeded here, the runner's error there)."""
    from edge_distill.device.runner import compare_candidates, describe_host

    if target is None:
        rows = compare_candidates(list(models.values()), threads, feed, providers, seconds_each,
                                  require_first=require_first, time_limit_s=time_limit_s)
        variant_of, host = {str(path): name for name, path in models.items()}, describe_host()
    else:
        inputs = {f"input:{name}": np.asarray(value)[None] for name, value in feed.items()}
        provider = providers[0] if isinstance(providers[0], str) else providers[0][0]
        args = ["--provider", provider, "--threads", ",".join(map(str, threads)), "--min-seconds", str(seconds_each),
                *(["--time-limit", str(time_limit_s)] if time_limit_s else [])]
        result = run_remote_benchmark(target, models, inputs, args, progress)
        rows, host = result["candidates"], result["host"]
        variant_of = {f"{name}.onnx": name for name in models}
    rows = [{"variant": variant_of[row["model"]], **{k: v for k, v in row.items() if k != "model"}} for row in rows]
    return {"where": target.destination if target else "this host", "host": host, "rows": rows}


def fastest(rows: list[dict], variant: str) -> dict | None:
    """The quickest row (lowest p50) of `variant` among time_side_by_side's rows; None if none ran."""
    return min((row for row in rows if row["variant"] == variant and "p50" in row), key=lambda row: row["p50"],
               default=None)


def device_target(device) -> RemoteTarget | None:
    """The RemoteTarget of a profile's [device] (config.DeviceConfig), where it names a host."""
    if not device.host:
        return None
    return RemoteTarget(device.host, Path(device.ssh_config).expanduser() if device.ssh_config else None,
                        device.python, device.connect_timeout_s, device.command_timeout_s)


def _run_local(model: Path, inputs: Path, args: list[str]) -> dict:
    """The same runner in a subprocess, so local and remote figures come from the same code path."""
    import sys

    done = subprocess.run([sys.executable, str(RUNNER), str(model), "--inputs", str(inputs), "--json", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:  # the runner's own one-line error is its last line
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or ["no message"]
        raise RemoteError(f"the local runner failed: {lines[-1][-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render_bench(report: dict) -> str:
    device = report["device"]
    where = (f"{report['where']}: {device['cpu']} ({device['arch']}, {device['cores']} cores, {device['os']}, "
             f"onnxruntime {device['onnxruntime']})")
    if "generation" in report:
        return "\n".join([where, *(f"{report['threads']} thread(s), batch 1: {row['prompt_tokens']}-token prompt: time to "
                                   f"first token {row['time_to_first_token_ms']:.1f} ms, then "
                                   f"{row['decode_tokens_per_s']:.1f} tokens/s over {row['new_tokens']} tokens"
                                   for row in report["generation"]),
                          f"peak memory {report['peak_rss_mb'] or 0:.0f} MB; golden greedy tokens on the device: "
                          f"{report['golden_greedy_same']}/{report['golden_samples']} prompts the same"
                          + (f" ({report['golden_near_ties']} through a near tie)" if report["golden_near_ties"] else "")
                          + "".join(f"\nFAIL  {failure}" for failure in report["golden_failures"])])
    latency = report["latency_ms"]
    return "\n".join([
        where,
        f"{report['provider']}, {report['threads']} thread(s), batch {report['batch']}: cold start "
        f"{latency['cold_start']:.2f} ms, p50 {latency['p50']:.4f} ms, p90 {latency['p90']:.4f} ms, "
        f"p95 {latency.get('p95', float('nan')):.4f} ms, p99 {latency['p99']:.4f} ms over {latency['runs']} runs "
        f"(cv {latency.get('cv_pct', float('nan')):.1f}%)",
        (f"golden top-1 agreement on the device: {report['golden_top1_agreement']:.4f} "
         f"({report['golden_samples']} samples)" if "golden_top1_agreement" in report else
         f"golden outputs on the device ({report['golden_samples']} samples): " + ", ".join(
             f"{name} max abs diff {diff:.3g} (tolerance {report['golden_atol'][name]:.3g})"
             for name, diff in report["golden_max_abs_diff"].items())),
        *(f"FAIL  {failure}" for failure in report.get("golden_failures", [])),
    ])
