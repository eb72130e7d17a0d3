"""A causal language model to an ONNX decoder with a KV cache, written by onnxruntime-genai's model
builder (what `python -m onnxruntime_genai.models.builder` runs), the exporter onnxruntime-genai's
own apps use:

  inputs   input_ids        int64  batch x sequence
           attention_mask   int64  batch x total_sequence (past + new)
           past_key_values.{i}.key / .value   float32  batch x kv_heads x past_sequence x head_dim
  outputs  logits           float32  batch x sequence x vocabulary (the teacher's whole vocabulary)
           present.{i}.key / .value           float32  batch x kv_heads x total_sequence x head_dim

A prefill feeds past tensors with past_sequence 0; each decode step feeds the presents back.
Positions come from the attention mask inside the graph, so batches are right-aligned: no left
padding.

Why the builder rather than a forward written here and traced: it fuses attention into
GroupQueryAttention with RotaryEmbedding, the norms into SkipSimplifiedLayerNormalization, and
quantizes weights (MatMulNBits) and a tied embedding (GatherBlockQuantized) in the same pass. On
the default student that decoded 1.5-2x faster than the traced graph at the same bits, in a file
half the size (benchmarks/llm_generation.py). It also covers every architecture it exports
(lm/teacher.ARCHITECTURES), Llama 3's rotary scaling and Gemma's norms and soft-capping included.

What is ours, as a graph edit on the builder's output (`cut_vocabulary`): a student with a cut
vocabulary (lm/student.py) reads the teacher's ids through its map and writes the teacher's whole
vocabulary; the tokens it left out share its "other" row's probability evenly. The expansion is a
GatherElements (ONNX Runtime's Gather took 430 us per decode step for it, GatherElements 43 us)
from one int32 table, which the input's Gather shares: 196 kB in the file for SmolLM2's 49,152 ids.

Checked against the transformers model on a prefill and on `steps` greedy decode steps.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_distill.errors import ConfigError, ExportParityError, ModelError, describe
from edge_distill.lm.settings import GENAI_CONFIG

PRECISIONS = ("fp32", "int8", "int4")  # the builder's -p; int8/int4: RTN symmetric, blocks of 32, accuracy level 4
PARITY_STEPS = 32
# The largest |logit| difference, fp32 against PyTorch: PARITY_ATOL, or PARITY_RTOL of the largest
# |logit| where logits are large (Gemma 3 270M's reach 100, and its student's differ by up to 1.4e-2
# at one step: fp32 sums in another order, while a real difference is of order 1).
PARITY_ATOL = 1e-3
PARITY_RTOL = 5e-4
MAX_PROTOBUF_BYTES = 2_000_000_000  # one .onnx file holds at most 2 GB (protobuf's limit)
BUILDER_HINT = 'pip install -e ".[llm]" (it installs onnxruntime-genai, whose model builder exports the decoder)'


def build_decoder(folder: Path, tokenizer: Path, out: Path, precision: str, kept: np.ndarray | None = None,
                  vocab_size: int | None = None, progress=None) -> dict[str, Any]:
    """The transformers model in `folder` (config.json, safetensors) as one .onnx file `out`
    (weights inside) at `precision`; with `kept` (the teacher ids of the model's rows but the
    last), reading and writing the teacher's `vocab_size` ids. `tokenizer`: the teacher's
    tokenizer.json, which the builder reads. Returns the builder's genai_config.json, fitted to `out`."""
    import onnx

    from edge_distill.lm.teacher import check_head_size

    out = out.absolute()  # the builder runs in a scratch folder of its own
    with tempfile.TemporaryDirectory(prefix=".builder-", dir=out.parent) as work:
        given, built = Path(work) / "given", Path(work) / "model"
        given.mkdir()
        for file in folder.iterdir():  # the model as the builder reads it: its files and a tokenizer
            if file.suffix in (".json", ".safetensors") and file.name != "tokenizer.json":
                (given / file.name).symlink_to(file.resolve())
        (given / "tokenizer.json").symlink_to(tokenizer.resolve())
        _run_builder(folder, given, built, precision, Path(work) / "hf")
        model = onnx.load(str(built / "model.onnx"))  # with its external data
        config = json.loads((built / GENAI_CONFIG).read_text())
    head_dim = config["model"]["decoder"]["head_size"]
    check_head_size(head_dim, folder)
    _fix_cache_shapes(model, head_dim)
    if kept is not None:
        cut_vocabulary(model, kept, vocab_size)
        config["model"]["vocab_size"] = vocab_size
    config["model"]["decoder"]["filename"] = "model.onnx"
    if model.ByteSize() > MAX_PROTOBUF_BYTES:
        raise ModelError(f"the {precision} decoder of {folder.name} is {model.ByteSize() / 1e9:.1f} GB, more than one "
                         ".onnx file holds (2 GB)", "use a smaller model, or a student (--layers)")
    partial = out.with_name(out.name + ".partial")
    onnx.save(model, str(partial))
    partial.replace(out)
    if progress:
        progress(f"export: {out.name} ({precision}, {out.stat().st_size / 1e6:.1f} MB) by onnxruntime-genai's builder")
    return config


def _run_builder(folder: Path, given: Path, built: Path, precision: str, cache: Path) -> None:
    """The builder's own two steps, as `python -m onnxruntime_genai.models.builder -i given -o built
    -p precision -e cpu` runs them, in this process (a process of its own spent 6.5 of its 7 s
    importing torch and transformers again), offline and quiet."""
    from edge_distill.export.onnx_io import quiet_libraries
    from edge_distill.text.teacher import offline

    create_model, parse_extra_options = _builder()
    offline()  # a local folder; never the hub
    # ORT's quantizer logs at ERROR what is no error here ("Gather only supports 4 bits": the int8
    # build keeps the embedding in float), through a handler quiet_libraries' redirection misses.
    logging.disable(logging.ERROR)
    try:
        with quiet_libraries(scratch_in=built.parent) as chatter:
            try:
                # A sliding window's cache as plain past-in, present-out tensors, not the fixed-size
                # ring the builder writes for genai's own loop: every runtime can feed it.
                options = parse_extra_options(None, str(given), str(built), precision, "cpu", str(cache),
                                              ["windowed_kv_cache=false"])
                _flatten_rope(options["hf_details"]["hf_config"])
                create_model(None, str(given), str(built), precision, "cpu", str(cache), **options)
            except Exception as e:  # the builder's own: an architecture or setting it does not export
                raise _builder_error(folder, precision, f"{chatter.getvalue()}\n{describe(e, 300)}") from None
    finally:
        logging.disable(logging.NOTSET)
    if not (built / "model.onnx").exists():
        raise _builder_error(folder, precision, chatter.getvalue())


def _builder():
    """The builder's create_model and parse_extra_options. Its modules import each other by bare
    names (`quantization`, `builders`) from its own folder, which its package appends to sys.path:
    the folder goes first while they are imported, so a same-named file beside the user's script
    (benchmarks/quantization.py is one) is not taken for them."""
    import importlib.util
    import sys

    spec = importlib.util.find_spec("onnxruntime_genai")
    if spec is None or spec.origin is None:
        raise ConfigError("exporting a language model needs onnxruntime-genai's model builder", BUILDER_HINT)
    folder = str(Path(spec.origin).parent / "models")
    sys.path.insert(0, folder)
    try:
        from onnxruntime_genai.models.builder import create_model, parse_extra_options
    except ImportError as e:
        raise ConfigError(f"onnxruntime-genai's model builder does not import ({describe(e, 200)})",
                          BUILDER_HINT) from None
    finally:
        sys.path.remove(folder)
    return create_model, parse_extra_options


def _flatten_rope(config) -> None:
    """transformers 5 keeps Gemma 3's rotary settings per layer type ({"full_attention": {...},
    "sliding_attention": {...}}); the builder reads them as transformers 4 wrote them: one
    rope_parameters for the global layers, rope_local_base_freq for the sliding ones."""
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and "full_attention" in rope and "sliding_attention" in rope:
        config.rope_local_base_freq = rope["sliding_attention"]["rope_theta"]
        config.rope_parameters = dict(rope["full_attention"])


def _builder_error(folder: Path, precision: str, output: str) -> Exception:
    lines = [line for line in output.strip().splitlines() if line.strip() and "it/s]" not in line]
    last = lines[-1][-300:] if lines else "no output"
    from edge_distill.lm.teacher import ARCHITECTURES

    return ModelError(f"onnxruntime-genai's model builder could not export {folder.name} at {precision}: {last}",
                      f"edge-distill exports these architectures: {', '.join(ARCHITECTURES)}")


def _fix_cache_shapes(model, head_dim: int) -> None:
    """The builder names the head size of the cache symbolically; a runtime reading the graph's
    inputs (device/decoder.py, Node) needs the number."""
    for value in [*model.graph.input, *model.graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.shape.dim[3].dim_value = head_dim


def cut_vocabulary(model, kept: np.ndarray, vocab_size: int) -> None:
    """Edit the graph of a model whose rows are `kept` (teacher ids) plus one "other" row to read
    and write teacher ids, through one int32 table (teacher id -> row): input ids mapped by a Gather;
    the other row's logit lowered by the log of how many ids share it, then the logits spread back to
    the teacher's `vocab_size` ids by a GatherElements (each left-out id reads the lowered other row)."""
    from onnx import TensorProto, helper, numpy_helper

    from edge_distill.lm.student import other_share, student_map

    graph = model.graph
    rows = len(kept)  # the other row's index
    constants = {"vocabulary.to_student": student_map(kept, vocab_size).astype(np.int32),
                 "vocabulary.axes": np.asarray([0, 1], np.int64), "vocabulary.last": np.asarray([2], np.int64),
                 "vocabulary.zero": np.asarray([0], np.int64), "vocabulary.two": np.asarray([2], np.int64),
                 "vocabulary.rows": np.asarray([rows], np.int64), "vocabulary.end": np.asarray([rows + 1], np.int64),
                 "vocabulary.size": np.asarray([vocab_size], np.int64),
                 "vocabulary.share": np.asarray(other_share(kept, vocab_size), np.float32)}
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    for node in graph.node:
        node.input[:] = ["vocabulary/student_ids" if name == "input_ids" else name for name in node.input]
        node.output[:] = ["vocabulary/student_logits" if name == "logits" else name for name in node.output]

    def node(op: str, inputs: list[str], output: str, **attributes):
        return helper.make_node(op, inputs, [output], name="vocabulary/write" if output == "logits" else output,
                                **attributes)

    graph.node.insert(0, node("Gather", ["vocabulary.to_student", "input_ids"], "vocabulary/rows32", axis=0))
    graph.node.insert(1, node("Cast", ["vocabulary/rows32"], "vocabulary/student_ids", to=TensorProto.INT64))
    graph.node.extend([
        node("Slice", ["vocabulary/student_logits", "vocabulary.zero", "vocabulary.rows", "vocabulary.last"],
             "vocabulary/kept"),
        node("Slice", ["vocabulary/student_logits", "vocabulary.rows", "vocabulary.end", "vocabulary.last"],
             "vocabulary/other"),
        node("Sub", ["vocabulary/other", "vocabulary.share"], "vocabulary/other_each"),
        node("Concat", ["vocabulary/kept", "vocabulary/other_each"], "vocabulary/lowered", axis=2),
        node("Shape", ["vocabulary/student_logits"], "vocabulary/shape"),
        node("Slice", ["vocabulary/shape", "vocabulary.zero", "vocabulary.two"], "vocabulary/batch_sequence"),
        node("Concat", ["vocabulary/batch_sequence", "vocabulary.size"], "vocabulary/out_shape", axis=0),
        node("Unsqueeze", ["vocabulary.to_student", "vocabulary.axes"], "vocabulary/index_3d"),
        node("Expand", ["vocabulary/index_3d", "vocabulary/out_shape"], "vocabulary/index"),
        node("GatherElements", ["vocabulary/lowered", "vocabulary/index"], "logits", axis=2)])
    logits = next(value for value in graph.output if value.name == "logits")
    logits.type.tensor_type.shape.dim[2].dim_value = vocab_size


def reference_logits(model, sequence: list[int], kept: np.ndarray | None, vocab_size: int) -> np.ndarray:
    """transformers' next-token logits after `sequence` (teacher ids), over the teacher's vocabulary."""
    import torch

    from edge_distill.lm.student import other_share, student_map

    with torch.no_grad():
        if kept is None:
            return model(input_ids=torch.tensor([sequence])).logits[0, -1].float().numpy()
        to_student = student_map(kept, vocab_size)
        rows = model(input_ids=torch.from_numpy(to_student[sequence])[None]).logits[0, -1].float().numpy()
    share = np.full(vocab_size, other_share(kept, vocab_size), dtype=np.float32)
    share[kept] = 0.0
    return rows[to_student] - share


def check_parity(model, path: Path, prompt: list[int], kept: np.ndarray | None = None,
                 steps: int = PARITY_STEPS) -> dict[str, float]:
    """The ONNX decoder against the transformers model (no cache, whole sequence each time): the
    prefill's logits, then `steps` greedy decode steps fed through the cache. Raises
    ExportParityError beyond PARITY_ATOL or on a different greedy token."""
    from edge_distill.device.decoder import Decoder
    from edge_distill.sessions import open_session

    decoder = Decoder(open_session(path, "the exported decoder"))
    try:
        return _follow_reference(decoder, model, prompt, kept, steps)
    except (ExportParityError, OSError):
        raise
    except Exception as e:  # onnxruntime's own, on a graph the builder wrote for another runtime
        raise ModelError(f"the exported decoder does not run in onnxruntime: {describe(e, 300)}",
                         "report this with the teacher's config.json") from None


def _follow_reference(decoder, model, prompt: list[int], kept: np.ndarray | None, steps: int) -> dict[str, float]:
    sequence, worst = list(prompt), {"prefill": 0.0, "decode": 0.0}
    state = decoder.start(np.asarray([prompt], dtype=np.int64))
    for step in range(steps + 1):
        logits = state.logits[0]
        expected = reference_logits(model, sequence, kept, decoder.vocab_size)
        diff = float(np.abs(logits - expected).max())
        tolerance = max(PARITY_ATOL, PARITY_RTOL * float(np.abs(expected).max()))
        key = "prefill" if step == 0 else "decode"
        worst[key] = max(worst[key], diff)
        if diff > tolerance or int(logits.argmax()) != int(expected.argmax()):
            raise ExportParityError(f"the ONNX decoder differs from PyTorch at {key} step {step}: max |logit| diff "
                                    f"{diff:.2e} (tolerance {tolerance:.2g})",
                                    "report this with the teacher's config.json")
        token = int(expected.argmax())
        sequence.append(token)
        state = decoder.advance(state, np.asarray([[token]], dtype=np.int64))
    return worst | {"steps": steps, "atol": PARITY_ATOL, "rtol": PARITY_RTOL}
