"""The student made from the teacher: its layers, its cut vocabulary and tokenizer, and the
teacher's weights where it has them."""

import json

import numpy as np
import pytest

from edge_distill.errors import ConfigError
from edge_distill.text.student import StudentShape, chosen_layers, student_from_teacher
from edge_distill.text.teacher import embed_texts, load_teacher
from tests.text.conftest import SENTENCES


def test_layers_are_spread_evenly_first_and_last_included():
    assert chosen_layers(6, 2) == [0, 5] and chosen_layers(6, 3) == [0, 2, 5] and chosen_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert chosen_layers(6, 6) == list(range(6)) and chosen_layers(6, 1) == [5]
    with pytest.raises(ConfigError, match="student layers 7: the teacher has 6"):
        chosen_layers(6, 7)


def test_a_student_with_every_layer_and_token_embeds_exactly_as_the_teacher(tiny_bert):
    teacher = load_teacher(tiny_bert, max_length=32)
    student, tokenizer_json, report = student_from_teacher(teacher, SENTENCES, StudentShape(layers=4, min_token_count=0))
    assert report["vocabulary"] == report["teacher_vocabulary"] and report["parameters"] == report["teacher_parameters"]
    np.testing.assert_allclose(embed_texts(student, teacher.tokenizer, teacher.pooling, SENTENCES),
                               embed_texts(teacher.model, teacher.tokenizer, teacher.pooling, SENTENCES), atol=1e-6)


def test_the_cut_vocabulary_tokenizes_the_training_text_to_the_same_tokens(tiny_bert):
    """Cut to what the first half of the sentences use: those tokenize to the same token strings
    under new ids, and the student's embedding rows are the teacher's rows of those tokens."""
    from tokenizers import Tokenizer

    teacher = load_teacher(tiny_bert, max_length=32)
    used = SENTENCES[:6]
    student, tokenizer_json, report = student_from_teacher(teacher, used, StudentShape(layers=2))
    assert report["layers_from_teacher"] == [0, 3] and report["vocabulary"] < report["teacher_vocabulary"]
    cut = Tokenizer.from_str(json.dumps(tokenizer_json))
    for text in used:
        assert cut.encode(text).tokens == teacher.tokenizer.encode(text).tokens
    ids = cut.encode(used[0]).ids
    teacher_ids = teacher.tokenizer.encode(used[0]).ids
    rows = student.embeddings.word_embeddings.weight.detach().numpy()[ids]
    np.testing.assert_array_equal(rows, teacher.model.embeddings.word_embeddings.weight.detach().numpy()[teacher_ids])
    assert cut.token_to_id("[PAD]") == 0 and cut.encode("zebra quantum").tokens[1:-1] != []  # unseen words still split
    # As an app reads it: cut at the teacher's max_length, never padded.
    assert tokenizer_json["padding"] is None and tokenizer_json["truncation"]["max_length"] == 32
    layer = student.encoder.layer[1].attention.self.query.weight.detach().numpy()
    np.testing.assert_array_equal(layer, teacher.model.encoder.layer[3].attention.self.query.weight.detach().numpy())
