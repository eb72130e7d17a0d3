"""The text to distill on: the embedded default, the user's files, the splits and the retrieval task."""

import pytest

from edge_distill.errors import DataError
from edge_distill.text.corpus import (default_corpus, read_passages, retrieval_pairs, split_passages,
                                      summary_and_rest, training_texts)


@pytest.mark.slow  # 5 s: reads the standard library's sources (the default text build's own data)
def test_the_default_corpus_is_the_standard_librarys_own_text_and_holds_its_task_out_of_training():
    first = default_corpus()
    assert len(first.train) > 3000 and len(first.test) > 200
    assert not set(first.test) & set(first.train) and not set(first.val) & set(first.train)
    queries, documents = retrieval_pairs(first.test)
    assert len(queries) == len(documents) > 200
    # No query or document of the retrieval task is trained on, whole or in part.
    assert not set(queries + documents) & set(training_texts(first))


def test_a_passage_lands_in_the_same_split_whatever_else_the_corpus_holds():
    passages = [f"passage number {i} with some words in it" for i in range(200)]
    alone = split_passages(passages[:100], "x")
    together = split_passages(passages, "x")
    assert set(alone.test) <= set(together.test) and set(alone.train) <= set(together.train)


def test_a_summary_is_the_first_paragraph_and_needs_a_rest_worth_retrieving():
    assert summary_and_rest("Return the size.\n\nThe size counts every item, nested ones included, once.") == \
        ("Return the size.", "The size counts every item, nested ones included, once.")
    assert summary_and_rest("Return the size.\n\nShort.") is None and summary_and_rest("One paragraph only.") is None


def test_user_text_one_passage_per_line_or_per_file(tmp_path):
    (tmp_path / "lines.txt").write_text("\n".join(f"line {i}" for i in range(12)) + "\n\n\n", encoding="utf-8")
    assert read_passages(tmp_path / "lines.txt") == [f"line {i}" for i in range(12)]
    (tmp_path / "folder").mkdir()
    for i in range(10):
        (tmp_path / "folder" / f"{i}.txt").write_text(f"file {i}\nsecond line", encoding="utf-8")
    assert read_passages(tmp_path / "folder")[0] == "file 0\nsecond line"


@pytest.mark.parametrize("content, expected", [
    (b"", "0 non-empty passage(s); at least 10 are needed"),
    ("caf\u00e9\n".encode("latin-1") * 20, "not UTF-8 (byte 3: invalid continuation byte)"),
])
def test_bad_text_is_one_line_naming_the_file(tmp_path, content, expected):
    (tmp_path / "t.txt").write_bytes(content)
    with pytest.raises(DataError) as e:
        read_passages(tmp_path / "t.txt")
    assert expected in e.value.message and str(tmp_path / "t.txt") in e.value.message
