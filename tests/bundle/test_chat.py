"""--chat: the bundle's chat template rendered as transformers renders it, in jinja2's sandbox, under a
time and a size bound (bundle/chat.py)."""

import time
from pathlib import Path

import pytest

from edge_distill.bundle.chat import RENDER_SECONDS, render_chat
from edge_distill.errors import BundleError

pytest.importorskip("jinja2")

# SmolLM2-135M-Instruct's template, as its GGUF file carries it.
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
           "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
WHERE = Path("generation.json")


def test_the_prompt_becomes_the_users_message_with_the_answer_opened():
    assert render_chat(SMOLLM2, "What is 2+2?", WHERE) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("template, words", [
    (None, "no chat_template: the teacher is not a chat model"),
    ("{{ raise_exception('only system and user roles') }}", "only system and user roles"),
    ("{{ messages.__class__.__mro__[1].__subclasses__() }}", "does not render"),  # the sandbox: no reaching into Python
    ("{{ 'A' * 1000000000 }}", "a repetition of 1,000,000,000 items"),  # refused before it is made
    ("{{ 2 ** 100000000 }}", "an exponent above 64"),
    ("{% for i in range(100000) %}{{ 'abcdefghij' * 100 }}{% endfor %}", "renders more than 1,000,000 characters"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
     "does not render"),  # doubles past any memory: stopped by the process's bound
])
def test_a_template_that_fails_or_runs_past_its_bounds_is_one_line(template, words):
    with pytest.raises(BundleError, match=words.replace("(", r"\(").replace("*", r"\*")):
        render_chat(template, "hi", WHERE)


@pytest.mark.slow  # waits out the bound
def test_a_template_that_never_ends_is_stopped_within_its_time_bound():
    started = time.perf_counter()
    with pytest.raises(BundleError, match=f"did not finish rendering in {RENDER_SECONDS:g} s"):
        render_chat("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "hi", WHERE)
    assert time.perf_counter() - started < RENDER_SECONDS + 5
