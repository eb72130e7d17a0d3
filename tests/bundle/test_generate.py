"""--chat: the bundle's chat template rendered as transformers renders it, in jinja2's sandbox."""

from pathlib import Path

import pytest

from edge_distill.bundle.generate import chat_prompt
from edge_distill.errors import BundleError

# SmolLM2-135M-Instruct's template, as its GGUF file carries it.
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
           "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_the_prompt_becomes_the_users_message_with_the_answer_opened():
    pytest.importorskip("jinja2")
    assert chat_prompt(SMOLLM2, "What is 2+2?", Path("generation.json")) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_a_bundle_without_a_template_or_with_a_broken_one_is_one_line():
    pytest.importorskip("jinja2")
    with pytest.raises(BundleError, match="no chat_template: the teacher is not a chat model"):
        chat_prompt(None, "hi", Path("generation.json"))
    with pytest.raises(BundleError, match="does not render"):
        chat_prompt("{{ raise_exception('only system and user roles') }}", "hi", Path("generation.json"))
    with pytest.raises(BundleError, match="does not render"):  # the sandbox: no reaching into Python
        chat_prompt("{{ messages.__class__.__mro__[1].__subclasses__() }}", "hi", Path("generation.json"))
