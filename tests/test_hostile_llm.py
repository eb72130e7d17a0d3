"""The bad-input corpus for language models (issue 34): `llm` fed broken and hostile teacher folders,
GGUF files, texts and flags, and generator bundles damaged one file at a time (their hashes made
to match again) fed to `generate`, `verify`, `bench` and `predict`. In the table form of
test_hostile_input.py: each row runs through the CLI, plain and with --json, and must end in its
exit code and one line holding its words, with no traceback, no code run and nothing written.

A damaged generator bundle is refused by every command through the generator kind's cheap checks
(bundle/kinds/generation.py): `verify` fails the check (exit 1), the others refuse before using the
bundle (exit 3)."""

from __future__ import annotations

import random
import threading

import pytest

from tests.hostile import unblock_fifos
from tests.hostile_llm import make_llm_workspace
from tests.test_bad_input import MARKER, check_case

pytest.importorskip("transformers", reason='pip install -e ".[llm]"')

LLM = "llm --teacher {w}/teachers/%s --text {w}/passages.txt --context 16 --layers 1 --out {w}/l-out --cache-dir {w}/never"
FLAGS = "llm --teacher {w}/teachers/base --text {w}/passages.txt --context 16 --layers 1 --out {w}/l-out " \
        "--cache-dir {w}/never %s"
TEXT = "llm --teacher {w}/teachers/base --text {w}/%s --context 16 --layers 1 --out {w}/l-out --cache-dir {w}/never"
GGUF = "llm --teacher {w}/gguf/%s --text {w}/passages.txt --out {w}/l-out --cache-dir {w}/never"
REFUSED = "refused"

# (teacher folder, words of its error): each refused before any stage runs
TEACHERS = [
    ("a-file", 2, ["teachers/a-file: not found, or neither a folder nor a .gguf file"]),
    ("no-config", 4, ["no config.json; not a causal language model folder"]),
    ("no-tokenizer", 4, ["no tokenizer.json"]),
    ("config-not-json", 4, ["config.json: not valid JSON"]),
    ("config-array", 4, ["config.json: the file must be an object"]),
    ("config-deep", 4, ["config.json: nested too deeply"]),
    ("config-huge", 4, ["config.json: 17,000,035 bytes, more than the 16,777,216"]),
    ("config-fifo", 4, ["config.json: is a FIFO"]),
    ("auto-map", 4, ["config.json has 'auto_map'", "never runs a teacher folder's code"]),
    ("tokenizer-config-auto-map", 4, ["tokenizer_config.json has 'auto_map'"]),
    ("tokenizer-config-huge", 4, ["tokenizer_config.json: 17,825,803 bytes"]),
    ("not-causal", 4, ["['LlamaModel'] name no ...ForCausalLM"]),
    ("bert", 4, ["['BertForMaskedLM'] name no ...ForCausalLM"]),
    ("unknown-architecture", 4, ["architecture 'mamba' is not one edge-distill llm exports"]),
    ("no-model-type", 4, ["missing 'model_type'"]),
    ("layers-string", 4, ["'num_hidden_layers' must be an integer"]),
    ("vocab-zero", 4, ["'vocab_size' must be an integer from 1"]),
    ("no-eos", 4, ["no end-of-sequence token id"]),
    ("eos-string", 4, ["no end-of-sequence token id"]),
    ("eos-beyond-vocabulary", 4, ["eos_token_id 5000 is past the model's vocab_size 300"]),
    ("tokenizer-beyond-vocabulary", 4, ["the tokenizer has 300 tokens, the model's vocab_size is 200"]),
    ("tokenizer-not-json", 4, ["tokenizer.json: not a tokenizer the tokenizers library reads"]),
    ("tokenizer-truncated", 4, ["tokenizer.json: not a tokenizer the tokenizers library reads", "EOF"]),
    ("tokenizer-fifo", 4, ["tokenizer.json: is a FIFO"]),
    ("tokenizer-huge", 4, ["tokenizer.json: 68,157,440 bytes, more than the 67,108,864"]),
    ("generation-config-not-json", 4, ["generation_config.json: not valid JSON"]),
    ("chat-template-number", 4, ["'chat_template' must be null or a string or a list", "got 5"]),
    ("chat-template-list-of-numbers", 4, ["'chat_template' must be null or a string or a list"]),
]
GGUF_FILES = [
    ("text.gguf", ["not a GGUF file gguf can read", "magic"]),
    ("empty.gguf", ["not a GGUF file gguf can read"]),
    ("magic-only.gguf", ["not a GGUF file gguf can read"]),
    ("version-99.gguf", ["not a GGUF file gguf can read", "version 99"]),
    ("billions-of-tensors.gguf", ["not a GGUF file gguf can read"]),
    ("billions-of-keys.gguf", ["not a GGUF file gguf can read"]),
    ("huge-key-name.gguf", ["not a GGUF file gguf can read"]),
    ("huge-array.gguf", ["not a GGUF file gguf can read"]),
    ("fifo.gguf", ["fifo.gguf: is a FIFO"]),
]
LLM_FLAGS = [
    ("layers-a-billion", "--layers 1000000000", 2, ["--layers 1000000000: the teacher has 2"]),  # bounded before allocation
    ("layers-zero", "--layers 0", 2, ["--layers"]),
    ("context-one", "--context 1", 2, ["--context"]),
    ("context-past-teacher", "--context 100000", 2, ["--context 100000: the teacher reads at most 256 tokens"]),
    ("train-windows-zero", "--train-windows 0", 2, ["--train-windows"]),
    ("vocab-negative", "--vocab -1", 2, ["--vocab"]),
    ("epochs-zero", "--epochs 0", 2, ["--epochs"]),
    ("perplexity-ratio-nan", "--max-perplexity-ratio nan", 2, ["--max-perplexity-ratio", "finite"]),
    ("perplexity-ratio-below-one", "--max-perplexity-ratio 0.9", 2, ["--max-perplexity-ratio", "0.9"]),
    ("on-policy-share-two", "--on-policy-share 2", 2, ["--on-policy-share"]),
    ("divergence-unknown", "--divergence bogus", 2, ["--divergence"]),
    ("kd-unknown", "--kd bogus", 2, ["--kd"]),
    # The message names --context, a flag llm has (it named --prompt-tokens, which llm does not).
    ("kd-sequence-short-context", "--kd sequence", 2, ["--context 16: --kd sequence continues each window's first 32"]),
    ("kd-on-policy-short-context", "--kd on-policy", 2, ["--context 16: --kd on-policy continues"]),
    ("init-unknown", "--init bogus", 2, ["--init"]),
    ("threads-zero", "--threads 0", 2, ["--threads"]),
    ("profile-cuda-without-cuda", "--profile cuda", 6, ["CUDAExecutionProvider not available"]),
    ("profile-unknown", "--profile rpi9", 2, ["unknown profile 'rpi9'"]),
    ("ms-per-token-nan", "--max-ms-per-token nan", 2, ["--max-ms-per-token", "finite"]),
    ("min-agreement-two", "--min-agreement 2", 2, ["--min-agreement"]),
    ("sweep-layers-not-numbers", "--min-agreement 0.5 --sweep-layers abc", 2, ["--sweep-layers 'abc'"]),
    ("sweep-with-remote", "--min-agreement 0.5 --remote 127.0.0.1", 2, ["--remote: a budget sweep times its students here"]),
    ("remote-as-option", "--remote -oProxyCommand=x", 2, ["not starting with '-'"]),
]
LLM_TEXTS = [
    ("text-fifo", "fifo.txt", 3, ["fifo.txt: is a FIFO"]),
    ("text-missing", "absent.txt", 3, ["absent.txt: file not found"]),
    ("text-not-utf8", "latin1.txt", 3, ["latin1.txt: not UTF-8"]),
    ("text-empty", "empty.txt", 3, ["empty.txt: 0 non-empty passage(s)"]),
    ("text-too-small", "two-lines.txt", 3, ["two-lines.txt: 2 non-empty passage(s); at least 10"]),
]
LLM_OUT = "llm --teacher {w}/teachers/base --text {w}/passages.txt --context 16 --layers 1 "
LLM_OUTPUTS = [  # where it writes: never into a bundle, a user's folder or a file
    ("out-inside-a-bundle", LLM_OUT + "--out {w}/gen/good-copy/inside --cache-dir {w}/never", 3,
     ["inside the edge-distill bundle", "nothing was changed"]),
    ("cache-inside-a-bundle", LLM_OUT + "--out {w}/l-out --cache-dir {w}/gen/good-copy/cache", 3,
     ["inside the edge-distill bundle", "choose a --cache-dir outside it"]),
    ("out-is-a-file", LLM_OUT + "--out {w}/passages.txt --cache-dir {w}/never", 3, ["exists and is not a folder"]),
    ("out-is-a-user-folder", LLM_OUT + "--out {w}/userfolder --cache-dir {w}/never", 3,
     ["not an edge-distill bundle", "nothing was changed"]),
    ("cache-is-a-user-folder", LLM_OUT + "--out {w}/l-out --cache-dir {w}/userfolder", 3,
     ["not an edge-distill cache", "nothing was changed"]),
    ("cache-is-a-file", LLM_OUT + "--out {w}/l-out --cache-dir {w}/passages.txt", 3, ["exists and is not a folder"]),
]

# (damaged generator bundle, the check that refuses it, words)
DAMAGED = [
    ("tokenizer-truncated", "tokenizer", "the tokenizers library failed (Exception: EOF while parsing"),
    ("tokenizer-not-json", "tokenizer", "the tokenizers library failed"),
    ("tokenizer-deep", "tokenizer", "the tokenizers library failed"),
    ("tokenizer-huge", "tokenizer", "more than the 67,108,864 a tokenizer may hold"),
    ("tokenizer-fails-on-every-input", "tokenizer", "Missing [UNK] token"),
    ("tokenizer-of-other-text", "golden tokenization", "0/4 golden prompts tokenize to their stored ids"),
    ("tokenizer-bigger-than-model", "vocabulary", "beyond the model's 300 logits"),
    ("eos-beyond-vocabulary", "vocabulary", "eos id 5000 beyond the model's 300 logits"),
    ("eos-disagrees", "generation settings", "disagrees with the manifest: eos_token_ids [1] (manifest: [2])"),
    ("max-length-disagrees", "generation settings", "max_length 999 (manifest: 256)"),
    ("max-length-string", "generation settings", "'max_length' must be an integer"),
    ("temperature-nan", "generation settings", "'sampling.temperature' must be a finite number >= 0, got nan"),
    ("top-p-above-one", "generation settings", "'sampling.top_p' must be in (0, 1], got 2.0"),
    ("top-k-negative", "generation settings", "'sampling.top_k' must be an integer >= 0, got -1"),
    ("chat-template-number", "generation settings", "'chat_template' must be null or a string or a list"),
    ("settings-not-json", "generation settings", "generation.json: not valid JSON"),
    ("settings-array", "generation settings", "generation.json: the file must be an object"),
    ("settings-deep", "generation settings", "generation.json: nested too deeply"),
    ("settings-huge", "generation settings", "more than the 4,194,304 this file may hold"),
    ("settings-outside", "generation settings", "generation.settings is not a file the bundle lists"),
    ("settings-unlisted", "generation settings", "generation.settings is not a file the bundle lists"),
    ("golden-count-disagrees", "golden generations", "golden.count is 5, golden.npz holds 4 prompts"),
    ("golden-prompts-missing", "golden generations", "golden.prompts is not one string per stored prompt"),
    ("golden-prompts-fewer", "golden generations", "golden.prompts is not one string per stored prompt"),
    ("golden-ids-negative", "golden generations", "golden ids hold -5"),
    ("golden-ids-beyond-vocabulary", "golden generations", "golden ids hold 999"),
    ("golden-lengths-beyond", "golden generations", "not of matching shapes"),
    ("manifest-vocabulary-disagrees", "golden generations", "first_logits have (300,) values per prompt, the model 400"),
]
GENERATE = "generate {w}/gen/%s 'The fox'"
CHAT = "generate {w}/gen/%s 'Hello' --chat"

CASES = (
    [(f"llm-teacher-{name}", LLM % name, code, words) for name, code, words in TEACHERS]
    + [(f"llm-gguf-{name}", GGUF % name, 3 if name == "fifo.gguf" else 4, words) for name, words in GGUF_FILES]
    + [(f"llm-{name}", FLAGS % flags, code, words) for name, flags, code, words in LLM_FLAGS]
    + [(f"llm-{name}", TEXT % text, code, words) for name, text, code, words in LLM_TEXTS]
    + [(f"llm-{name}", command, code, words) for name, command, code, words in LLM_OUTPUTS]
    + [(f"generate-{name}", GENERATE % name, 3, [REFUSED, f"refused: {check}: ", words]) for name, check, words in DAMAGED]
    + [(f"bench-{name}", f"bench {{w}}/gen/{name}", 3, [REFUSED, words]) for name, _, words in DAMAGED]
    + [(f"verify-{name}", f"verify {{w}}/gen/{name}", 1, [f"FAIL  {check:<24} ", words]) for name, check, words in DAMAGED]
    + [(f"predict-{name}", f"predict {{w}}/gen/{name} x", 3, [REFUSED, words]) for name, _, words in DAMAGED[:6]]
    + [
        # the model itself swapped for one of another vocabulary, the manifest's hashes redone
        ("generate-model-of-other-vocabulary", GENERATE % "model-of-other-vocabulary", 3,
         ["model.onnx: its logits hold 320 tokens, the manifest says 300"]),
        ("verify-model-of-other-vocabulary", "verify {w}/gen/model-of-other-vocabulary", 1,
         ["FAIL  model outputs", "logits: batch_size x sequence_length x 320"]),
        ("bench-model-of-other-vocabulary", "bench {w}/gen/model-of-other-vocabulary", 1,
         ["FAIL  the model has 1 layer(s) and 320 logits, the manifest says 1 and 300"]),
        ("predict-a-generator", "predict {w}/gen/good-copy x", 3, ["a text generator bundle", "edge-distill generate"]),
        # --chat: the template is a program from someone else, rendered under bounds
        ("chat-named-templates-without-default", CHAT % "chat-template-named-list", 3,
         ["chat_template holds templates named tool_use, none named 'default'"]),
        ("chat-repeat-a-billion", CHAT % "chat-template-repeat", 3, ["a repetition of 1,000,000,000 items"]),
        ("chat-sandbox-escape", CHAT % "chat-template-escape", 3, ["the chat_template does not render"]),
        ("chat-long-output", CHAT % "chat-template-long-output", 3, ["renders more than 1,000,000 characters"]),
        ("chat-without-template", CHAT % "good-copy", 3, ["no chat_template: the teacher is not a chat model"]),
        # the prompt and the sampling flags
        ("generate-prompt-not-utf8", "generate {w}/gen/good-copy '\udcff\udcfe'", 3, ["the prompt is not valid UTF-8"]),
        ("generate-prompt-empty", "generate {w}/gen/good-copy ''", 3, ["the prompt is empty after tokenizing"]),
        ("generate-prompt-past-max-length", "generate {w}/gen/good-copy '" + "The fox jumps. " * 80 + "'", 3,
         ["the bundle generates at most 256 in all"]),  # the tiny teacher's context
        ("generate-new-tokens-zero", GENERATE % "good-copy" + " --max-new-tokens 0", 2, ["--max-new-tokens"]),
        ("generate-flag-temperature-nan", GENERATE % "good-copy" + " --temperature nan", 2, ["--temperature", "finite"]),
        ("generate-temperature-negative", GENERATE % "good-copy" + " --temperature -1", 2, ["--temperature"]),
        ("generate-top-p-zero", GENERATE % "good-copy" + " --top-p 0", 2, ["--top-p"]),
        ("generate-repetition-penalty-zero", GENERATE % "good-copy" + " --repetition-penalty 0", 2,
         ["--repetition-penalty"]),
        ("generate-stop-empty", GENERATE % "good-copy" + " --stop ''", 2, ["--stop", "an empty string"]),
        ("generate-flag-top-k-negative", GENERATE % "good-copy" + " --top-k -1", 2, ["--top-k"]),
        ("generate-an-image-bundle", "generate {w}/image-bundle 'The fox'", 3, ["not a text generator bundle"]),
        ("generate-not-a-bundle", "generate {w}/userfolder 'The fox'", 3, ["manifest.json: missing"]),
    ]
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from click.testing import CliRunner

    from edge_distill.cli import main
    from tests import handmade
    from tests.lm.conftest import SENTENCES, tiny_llama_folder

    build = tmp_path_factory.mktemp("llm-build")
    teacher = tiny_llama_folder(build / "teacher", layers=2)
    rng = random.Random(0)
    (build / "text.txt").write_text("\n".join(" ".join(rng.sample(SENTENCES, 3)) for _ in range(200)))
    done = CliRunner().invoke(main, ["llm", "--teacher", str(teacher), "--text", str(build / "text.txt"), "--context",
                                     "16", "--layers", "1", "--vocab", "0", "--epochs", "1", "--train-windows", "32",
                                     "--out", str(build / "bundle"), "--cache-dir", str(build / "cache"), "--quiet"])
    assert done.exit_code == 0, done.output
    w = tmp_path_factory.mktemp("hostile-llm")
    make_llm_workspace(w, build / "bundle")
    handmade.bundle(w / "image-bundle")
    stop = threading.Event()
    threading.Thread(target=unblock_fifos, args=(w, stop), daemon=True).start()
    yield w
    stop.set()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gives_one_line_and_its_exit_code(case, workspace):
    check_case(case, workspace)
    assert not (workspace / "l-out").exists()


def test_the_nan_weights_of_a_teacher_are_one_line_when_it_is_loaded(workspace):
    """Found only where the weights are read (the teacher stage), as one line, not as quantization's
    "scale issue" four stages later."""
    case = ("llm-teacher-nan-weights", LLM.replace("{w}/never", "{w}/cache") % "nan-weights", 4,
            ["its weights hold NaN or inf (model.embed_tokens.weight)"])
    check_case(case, workspace)


def test_the_corpus_covers_the_language_model_surfaces():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1].split()[0] for c in CASES}
    assert {"llm", "generate", "verify", "bench", "predict"} <= commands


def test_every_damaged_generator_still_verifies_once_repaired(workspace):
    """The damaged copies start from a bundle every command accepts: the rows test the damage."""
    from tests.test_cli import invoke

    assert invoke("verify", str(workspace / "gen" / "good-copy")).exit_code == 0
    assert invoke("generate", str(workspace / "gen" / "good-copy"), "The fox", "--max-new-tokens", "2").exit_code == 0
    assert not (workspace / MARKER).exists()
