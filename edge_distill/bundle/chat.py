"""A generator bundle's chat template rendered as transformers renders it (jinja2's immutable sandbox,
`raise_exception`, the user's message, the assistant's turn opened), under bounds a template from
someone else cannot break: a template is a program.

jinja2's sandbox stops a template from reaching Python, but not from running forever (nested loops)
or growing without end (`{{ 'A' * 1000000000 }}`, a string doubled in a loop). A thread cannot be
stopped, so the template renders in a process of its own (about 0.1 s), which:
- is killed past RENDER_SECONDS;
- cannot map more than RENDER_MEMORY_BYTES (RLIMIT_AS, where the OS has it);
- refuses a `*` or `**` whose result would pass RENDER_CHARS, before making it;
- stops as soon as its output passes RENDER_CHARS.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge_distill.errors import BundleError, ConfigError

RENDER_SECONDS = 5.0
RENDER_MEMORY_BYTES = 1024**3
RENDER_CHARS = 1_000_000  # a rendered prompt; the model reads at most max_length tokens of it anyway

_RENDER = r"""
import json, sys
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
except (ImportError, ValueError, OSError):
    pass
limit = int(sys.argv[2])
try:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
except ImportError:
    print(json.dumps({"missing": "jinja2"}))
    sys.exit(0)


class Bounded(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(right) > 64:
            raise SecurityError("an exponent above 64")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(count, int) and len(sequence) * count > limit:
                    raise SecurityError(f"a repetition of {len(sequence) * count:,} items")
        return super().call_binop(context, operator, left, right)


def raise_exception(message):
    raise jinja2.TemplateError(message)


request = json.loads(sys.stdin.read())
environment = Bounded(trim_blocks=True, lstrip_blocks=True)
environment.globals["raise_exception"] = raise_exception
pieces, size = [], 0
try:
    for piece in environment.from_string(request["template"]).generate(
            messages=[{"role": "user", "content": request["prompt"]}], add_generation_prompt=True):
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            print(json.dumps({"error": f"it renders more than {limit:,} characters"}))
            sys.exit(0)
except MemoryError:
    print(json.dumps({"error": "it needs more memory than a chat prompt may"}))
    sys.exit(0)
except (jinja2.TemplateError, SecurityError, RecursionError, TypeError, ValueError, OverflowError) as e:
    print(json.dumps({"error": f"{type(e).__name__}: {str(e)[:200]}"}))
    sys.exit(0)
print(json.dumps({"prompt": "".join(pieces)}))
"""


def render_chat(template: str | None, prompt: str, where: Path) -> str:
    """`prompt` as the user's one message, rendered by `template` with the assistant's turn opened;
    a template that fails, runs past the bounds or is absent is one BundleError naming `where`."""
    if not template:
        raise BundleError(f"{where}: no chat_template: the teacher is not a chat model",
                          "drop --chat and give the text to continue")
    try:
        done = subprocess.run([sys.executable, "-c", _RENDER, str(RENDER_MEMORY_BYTES), str(RENDER_CHARS)],
                              input=json.dumps({"template": template, "prompt": prompt}), capture_output=True,
                              text=True, timeout=RENDER_SECONDS)
    except subprocess.TimeoutExpired:
        raise BundleError(f"{where}: the chat_template did not finish rendering in {RENDER_SECONDS:g} s",
                          "drop --chat, or fix the template in generation.json") from None
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if result.get("missing"):
        raise ConfigError("--chat renders the bundle's chat template with jinja2, which is not installed",
                          "pip install jinja2")
    if "prompt" in result:
        return result["prompt"]
    why = result.get("error") or f"the renderer stopped ({(done.stderr.strip().splitlines() or ['no message'])[-1][:200]})"
    raise BundleError(f"{where}: the chat_template does not render ({why})", "drop --chat, or fix the template")
