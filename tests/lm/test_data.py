"""The text as token windows: non-overlapping, spread over the text when capped, and opened by the
tokenizer's BOS token where it puts one before every text (Gemma's), as the model was trained."""

import numpy as np

from edge_distill.lm.data import leading_token, windows


def test_windows_overlap_by_one_token_so_every_position_has_a_next_token():
    stream = np.arange(10, dtype=np.int32)
    assert windows(stream, 4).tolist() == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]
    assert windows(stream, 4, limit=1).tolist() == [[0, 1, 2, 3, 4]]


def test_with_a_bos_token_each_window_opens_with_it_and_reads_on():
    stream = np.arange(10, dtype=np.int32) + 100
    assert windows(stream, 4, bos=2).tolist() == [[2, 100, 101, 102, 103], [2, 104, 105, 106, 107]]
    assert windows(stream[:3], 4, bos=2).shape == (0, 5)


def test_the_leading_token_is_the_one_a_tokenizer_adds_before_every_text():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordLevel({"<bos>": 0, "a": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    assert leading_token(tokenizer) is None
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    assert leading_token(tokenizer) == 0
