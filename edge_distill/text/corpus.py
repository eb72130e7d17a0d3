"""Text to distill a text model on, and a retrieval task to judge it by.

The user's text is a UTF-8 `.txt` file (one passage per line) or a folder of `.txt` files (one
passage per file). The embedded default is made from what every Python installation ships: the
docstrings of the standard library's own source files, read with `ast` (nothing is imported, so
nothing runs), and the documentation topics of `pydoc`, one passage per paragraph. Nothing is
downloaded.

The retrieval task is built from held-out passages: a passage's summary (its first paragraph, or
its first sentence when it has one paragraph) is the query, the rest of it the one relevant
document among all the others.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from edge_distill.errors import DataError
from edge_distill.files import read_text

MAX_TEXT_BYTES = 2 * 1024**3  # a --text file is read whole
MIN_PASSAGE_CHARS = 80  # shorter docstrings are mostly "Return x." and say little
MIN_DOCUMENT_CHARS = 40  # the rest of a docstring, for it to be worth retrieving
SKIPPED_PARTS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}


@dataclass(frozen=True)
class Corpus:
    """Passages split three ways by a stable hash of their text: `train` for distillation, `val`
    for choosing, `test` for the retrieval task only."""
    source: str
    train: list[str]
    val: list[str]
    test: list[str]


def stdlib_docstrings() -> list[str]:
    """Docstrings (modules, classes, functions) of at least MIN_PASSAGE_CHARS in the standard
    library's source, unique, in a fixed order."""
    return list(stdlib_docstring_modules())


@functools.cache  # the classification task reads it, then the corpus it takes its transfer text from
def stdlib_docstring_modules() -> Mapping[str, str]:
    """{docstring: the top-level standard-library module or package it is in}, as
    stdlib_docstrings() lists them (a docstring found in two modules keeps the first); read-only."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, str] = {}
    for path in sorted([*root.glob("*.py"), *root.glob("*/*.py")]):
        parts = path.relative_to(root).parts
        if SKIPPED_PARTS.intersection(parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_PASSAGE_CHARS:
                    found.setdefault(doc.strip(), parts[0].removesuffix(".py"))
    return MappingProxyType(found)


def pydoc_paragraphs() -> list[str]:
    """The paragraphs of pydoc's documentation topics (the language reference `help()` shows)."""
    from pydoc_data.topics import topics

    paragraphs = (p.strip() for name in sorted(topics) for p in re.split(r"\n\s*\n", topics[name]))
    return list(dict.fromkeys(p for p in paragraphs if len(p) >= MIN_PASSAGE_CHARS))


def read_passages(path: Path) -> list[str]:
    """The user's passages: a .txt file, one per line, or a folder of .txt files, one per file."""
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise DataError(f"{path}: no .txt files in the folder", "put UTF-8 .txt files there, one passage per file")
    passages = []
    for file in files:
        text = read_text(file, "--text", MAX_TEXT_BYTES, DataError)
        passages += [text.strip()] if path.is_dir() else [line.strip() for line in text.splitlines()]
    passages = [p for p in dict.fromkeys(passages) if p]
    if len(passages) < 10:
        raise DataError(f"{path}: {len(passages)} non-empty passage(s); at least 10 are needed",
                        "one passage per line (a file) or per file (a folder)")
    return passages


def split_passages(passages: list[str], source: str, val_share: float = 0.1, test_share: float = 0.1) -> Corpus:
    """Each passage goes to train, val or test by a hash of its text: the same passage lands in the
    same split whatever else the corpus holds."""
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for passage in passages:
        share = int(hashlib.sha256(passage.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        splits["test" if share < test_share else "val" if share < test_share + val_share else "train"].append(passage)
    return Corpus(source, **splits)


DEFAULT_SOURCE = "the Python standard library's docstrings and pydoc topics"


def default_corpus_key() -> dict[str, str]:
    """What the default corpus depends on, without reading it: the standard library it is read from."""
    import sys

    return {"text": "default", "python": sys.version, "stdlib": sysconfig.get_paths()["stdlib"]}


def default_corpus() -> Corpus:
    """The embedded default: standard-library docstrings (split three ways; the retrieval task
    comes from the test split) and pydoc's paragraphs (training only)."""
    docstrings = split_passages(stdlib_docstrings(), "docstrings")
    return Corpus(DEFAULT_SOURCE, docstrings.train + pydoc_paragraphs(), docstrings.val, docstrings.test)


def summary_and_rest(passage: str) -> tuple[str, str] | None:
    """(first paragraph, the rest) or, for a passage of one paragraph, (first sentence, the rest);
    None when either is too short to make a query or a document."""
    first, _, rest = passage.partition("\n\n")
    if not rest.strip():
        first, _, rest = " ".join(passage.split()).partition(". ")
        first += "."
    first, rest = " ".join(first.split()), rest.strip()
    if len(first) < 10 or len(rest) < MIN_DOCUMENT_CHARS:
        return None
    return first, rest


def retrieval_pairs(passages: list[str]) -> tuple[list[str], list[str]]:
    """(queries, documents): query i's one relevant document is document i."""
    pairs = [pair for pair in map(summary_and_rest, passages) if pair]
    return [q for q, _ in pairs], [d for _, d in pairs]


def training_texts(corpus: Corpus) -> list[str]:
    """What the student learns to embed as the teacher does: each training passage, and its summary
    and rest apart, so that short queries and long documents are both seen; never a text that is
    also a held-out passage, query or document (the same summary line opens many docstrings)."""
    held_out = set(corpus.val + corpus.test)
    for split in (corpus.val, corpus.test):
        held_out.update(*retrieval_pairs(split))
    texts = list(corpus.train)
    for pair in map(summary_and_rest, corpus.train):
        if pair:
            texts += pair
    return [text for text in dict.fromkeys(texts) if text not in held_out]
