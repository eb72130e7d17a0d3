"""Labeled text for a classification teacher and student.

The user's is a UTF-8 `.jsonl` file, one `{"text": ..., "label": ...}` per line (the format
Hugging Face datasets and SetFit read); a label is a class name or an integer. The embedded default
is a task made from what every Python installation ships: which standard-library module a
docstring comes from, over the modules with at least MIN_CLASS_DOCSTRINGS docstrings (11 on
Python 3.11: tkinter, asyncio, email, logging, ...).

Examples are split three ways by a hash of their text, as corpus.split_passages splits passages, so
a docstring is held out here exactly when it is held out from the embedding corpus.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edge_distill.errors import DataError
from edge_distill.files import parse_json, read_text
from edge_distill.text.corpus import split_passages

MIN_CLASS_DOCSTRINGS = 80
MIN_EXAMPLES = 10
MAX_LABELED_BYTES = 2 * 1024**3  # read whole; past this, split the file
MAX_LABEL_LENGTH = 200


@dataclass(frozen=True)
class LabeledTexts:
    """Examples as (text, class index into `names`), split train/val/test; `unlabeled` is more
    text for the teacher to label softly (the transfer set), none of it held out."""
    source: str
    names: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]
    unlabeled: list[str]


def read_labeled(path: Path) -> list[tuple[str, str]]:
    """(text, label name) of each line of a .jsonl file, checked; duplicates of a text dropped."""
    lines = read_text(path, "--labeled", MAX_LABELED_BYTES, DataError).splitlines()
    examples: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = parse_json(line, f"{path}:{number}", DataError)
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise DataError(f"{path}:{number}: no non-empty string 'text'", 'one {"text": ..., "label": ...} object per line')
        label = row.get("label")
        if isinstance(label, bool) or not isinstance(label, (str, int)) or not 0 < len(str(label)) <= MAX_LABEL_LENGTH:
            raise DataError(f"{path}:{number}: 'label' {repr(label)[:60]} is not a class name or an integer "
                            f"(at most {MAX_LABEL_LENGTH} characters)",
                            'e.g. "label": "positive" or "label": 1')
        examples.setdefault(row["text"].strip(), str(label))
    if len(examples) < MIN_EXAMPLES:
        raise DataError(f"{path}: {len(examples)} example(s); at least {MIN_EXAMPLES} are needed",
                        'one {"text": ..., "label": ...} object per line')
    if len(set(examples.values())) < 2:
        raise DataError(f"{path}: every example has the label {next(iter(examples.values()))!r}",
                        "a classifier needs at least two classes")
    return list(examples.items())


def class_names(labels: list[str]) -> list[str]:
    """The classes in index order: numerically when every label is an integer, else alphabetically."""
    unique = set(labels)
    if all(re.fullmatch(r"-?[0-9]{1,18}", name) for name in unique):  # ASCII digits: "²".isdigit() is true
        return sorted(unique, key=int)
    return sorted(unique)


def split_labeled(examples: list[tuple[str, str]], source: str, names: list[str],
                  unlabeled: list[str] = ()) -> LabeledTexts:
    """`examples` split by their text's hash, labels as indices into `names`; `unlabeled` minus
    every labeled text."""
    index = {name: i for i, name in enumerate(names)}
    label_of = dict(examples)
    split = split_passages(list(label_of), source)
    labeled = set(label_of)
    return LabeledTexts(source, names, *([(text, index[label_of[text]]) for text in part]
                                         for part in (split.train, split.val, split.test)),
                        [text for text in dict.fromkeys(unlabeled) if text not in labeled])


def labeled_from_file(path: Path, unlabeled: list[str] = ()) -> LabeledTexts:
    examples = read_labeled(path)
    return split_labeled(examples, str(path), class_names([label for _, label in examples]), unlabeled)


def default_labeled_task(unlabeled: list[str] | None = None) -> LabeledTexts:
    """Which standard-library module a docstring comes from; the transfer set is `unlabeled` or
    else the embedding corpus's training text (other modules' docstrings, pydoc's topics), none of
    it held out."""
    from edge_distill.text.corpus import default_corpus, stdlib_docstring_modules, training_texts

    modules = stdlib_docstring_modules()
    sizes = Counter(modules.values())
    names = sorted(name for name, count in sizes.items() if count >= MIN_CLASS_DOCSTRINGS)
    examples = [(text, module) for text, module in modules.items() if module in names]
    held_out = {text for text, _ in examples}  # labeled texts are never transfer text, whatever their split
    transfer = [text for text in (training_texts(default_corpus()) if unlabeled is None else unlabeled)
                if text not in held_out]
    return split_labeled(examples, "which standard-library module a docstring comes from", names, transfer)


def in_teacher_order(task: LabeledTexts, id2label: dict[int, str], folder: Path) -> LabeledTexts:
    """`task` with its labels renumbered to a classification teacher's classes: by name, or in
    order where the teacher's names are transformers' placeholders (LABEL_0, ...). A teacher
    with another number of classes, or other names, is a DataError naming both."""
    teacher_names = [id2label[i] for i in sorted(id2label)]
    if len(teacher_names) != len(task.names):
        raise DataError(f"teacher folder {folder} has {len(teacher_names)} labels ({', '.join(teacher_names[:8])}); "
                        f"{task.source} has {len(task.names)} ({', '.join(task.names[:8])})",
                        "give labeled text with the teacher's classes, or a teacher fine-tuned on these")
    if all(name == f"LABEL_{i}" for i, name in enumerate(teacher_names)):
        return task
    missing = sorted(set(task.names) - set(teacher_names))
    if missing:
        raise DataError(f"{task.source}: label(s) {', '.join(missing[:8])} are not among teacher folder {folder}'s "
                        f"labels ({', '.join(teacher_names[:8])})", "name the classes as the teacher's config.json id2label does")
    renumber = [teacher_names.index(name) for name in task.names]
    return LabeledTexts(task.source, teacher_names, *([(text, renumber[label]) for text, label in part]
                                                     for part in (task.train, task.val, task.test)), task.unlabeled)
