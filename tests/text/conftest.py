"""A tiny BERT model folder made here (random weights, a WordPiece vocabulary learned from a few
sentences), saved as a Hugging Face folder is: config.json, model.safetensors, tokenizer.json."""

import json

import pytest

transformers = pytest.importorskip("transformers", reason='pip install -e ".[text]"')

SENTENCES = [
    "Return the number of items in a container.", "Open a file and return a stream.",
    "Split the string at the separator and return a list.", "Join the parts with a separator.",
    "Raise an error when the key is missing.", "Sort the list in place, stable.",
    "Read the whole file as text.", "Write the bytes and flush the stream.",
    "Compute the square root of a number.", "Create a new thread and start it.",
    "Wait until the lock is released.", "Parse the arguments of the command line.",
]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(SENTENCES * 3, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    vocab = tokenizer.get_vocab()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(folder))
    (folder / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Transformer"},
                                                     {"type": "sentence_transformers.models.Normalize"}]))
    return folder


@pytest.fixture(scope="session")
def tiny_classifier(tiny_bert, tmp_path_factory):
    """The tiny BERT with a (random) classification head of three classes, saved as such a folder is."""
    import shutil

    import torch
    from transformers import BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-classifier")
    shutil.copy(tiny_bert / "tokenizer.json", folder)
    torch.manual_seed(1)
    names = ["io", "text", "threads"]
    BertForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3, id2label=dict(enumerate(names)),
                                                  label2id={n: i for i, n in enumerate(names)}).save_pretrained(str(folder))
    return folder
