"""Typed build configuration: defaults < device profile < config file < --set overrides.

Every key is validated against the dataclasses below (typed_fields.build_dataclass); an error
names the key, the file (or `--set`) it came from, what was expected, and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_distill.errors import ConfigError, did_you_mean
from edge_distill.files import regular_file
from edge_distill.profiles.catalog import profile_path
from edge_distill.typed_fields import at_least, between, build_dataclass, choice, positive_ints


# The built-in model families: models/families.FAMILIES builds them (a test keeps the two equal;
# this module stays free of torch).
FAMILY_NAMES = ("convnet", "mobilenet", "mobilenetv3", "resnet")


@dataclass(frozen=True)
class DeviceConfig:
    """The target device. Figures are measured on the host unless its arch matches."""

    name: str = "host"
    description: str = ""
    arch: str = choice("x86_64", "x86_64", "aarch64")
    cpu: str = ""
    # [user@]host of the device: `build` and `optimize` then time float against int8 there, and
    # `build` benchmarks the bundle there, over SSH. Never starting with "-": ssh would read it as an option.
    host: str = field(default="", metadata={"pattern": (r"[^-\s][^\s]*|", "[user@]host, not starting with '-'")})
    ssh_config: str = ""  # ssh config file for host (default: OpenSSH's own)
    python: str = "python3"  # Python on the device, with numpy and onnxruntime
    connect_timeout_s: int = at_least(10, 1)  # for ssh to connect
    command_timeout_s: int = at_least(600, 1)  # for each command on the device
    # ISA features of the device's own architecture (ISA_FEATURES); the search adds reduce_range
    # recipes on x86 without a VNNI feature, where u8s8 int8 can saturate.
    isa: list[str] = field(default_factory=list, metadata={"example": '["neon", "dotprod"]'})
    # Roofline figures for `edge-distill estimate`, whole chip, with where they come from.
    cores: int = at_least(4, 1)
    peak_fp32_gflops: float = at_least(100.0, 1e-3)
    peak_int8_gops: float = at_least(400.0, 1e-3)
    memory_bandwidth_gbs: float = at_least(20.0, 1e-3)
    # A model whose weights fit in the last-level cache streams them from there on warm runs.
    cache_bytes: int = at_least(0, 0)  # 0: assume DRAM always
    cache_bandwidth_gbs: float = at_least(100.0, 1e-3)
    dispatch_us_per_node: float = at_least(1.5, 0.0)  # ONNX Runtime's fixed cost per compute kernel and run
    # A light kernel (elementwise, reshaping: run on the calling thread, not handed to the thread
    # pool) costs this share of a compute kernel's dispatch: 0.18 / 1.19 us measured on x86.
    light_dispatch_share: float = between(0.15, 0.0, 1.0)
    run_overhead_us: float = at_least(5.0, 0.0)  # fixed cost of one session.run call
    peak_sources: list[str] = field(default_factory=list)

    @property
    def is_host_arch(self) -> bool:
        """Whether this host has the device's architecture, so that what runs faster is worth
        measuring here (platform.machine(), as device.runner.describe_host reports it)."""
        import platform

        return platform.machine() == self.arch


@dataclass(frozen=True)
class DataConfig:
    """Where samples come from and how they are split."""

    source: str = "digits"  # "digits" (embedded) or a path: an image folder or an .npz file
    val_fraction: float = between(0.15, 0.05, 0.5)
    test_fraction: float = between(0.2, 0.05, 0.5)
    color_mode: str = choice("grayscale", "grayscale", "rgb")  # image folders only
    image_size: list[int] = positive_ints([], (0, 2), "[96, 96]")  # [H, W] for image folders; [] keeps size
    # .npz only: "auto" reads (N, L) as 1-D signals and (N, H, W) / (N, C, H, W) as images;
    # "NCL" reads (N, C, L) as signals with C channels.
    layout: str = choice("auto", "auto", "NCL")
    # Unlabeled transfer data the teacher labels with soft targets: an image folder without class
    # subfolders, or an .npz with an `x` array.
    transfer: str = ""
    # Keep only this many labeled training samples (stratified); the rest of the train split
    # joins the transfer set without labels. 0 keeps every label.
    labeled_samples: int = at_least(0, 0)


@dataclass(frozen=True)
class TeacherInputConfig:
    """A pretrained teacher's own preprocessing, when it differs from this build's: the teacher is
    fed the same samples, converted (e.g. [teacher.input] size = [224, 224], pixel_scale = 0.003921569,
    mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225], channels = "gray_to_rgb"). Unset: as the data."""

    size: list[int] = positive_ints([], (0, 2), "[224, 224]")  # [H, W], resized bilinearly
    pixel_scale: float = at_least(0.0, 0.0)  # 0: the data's
    mean: list[float] = field(default_factory=list)  # per teacher channel; []: the data's
    std: list[float] = field(default_factory=list, metadata={"item_min": 1e-12})
    # "reversed": RGB data to a BGR teacher; "gray_to_rgb": one data channel repeated for a 3-channel teacher.
    channels: str = choice("as_data", "as_data", "reversed", "gray_to_rgb")

    @property
    def given(self) -> bool:
        return self != TeacherInputConfig()


@dataclass(frozen=True)
class TeacherConfig:
    """The user's teacher (factory + checkpoint) or the built-in ConvNet trained here."""

    factory: str = ""  # "package.module:function" returning an nn.Module; "" = built-in
    checkpoint: str = ""  # state_dict file, loaded with weights_only=True
    # A whole teacher in a file, used as it is (not trained here): TorchScript (torch.jit.save),
    # torch.export (torch.export.save) or ONNX (run with onnxruntime: a black box).
    file: str = ""
    ensemble: list[str] = field(default_factory=list)  # more teacher files; their soft targets are combined
    ensemble_weights: list[float] = field(default_factory=list)  # main teacher first; [] = plain mean
    family: str = choice("convnet", *FAMILY_NAMES)  # built-in architecture
    width: int = at_least(64, 1)
    depth: int = between(3, 1, 4)
    epochs: int = at_least(30, 1)
    batch_size: int = at_least(64, 1)
    lr: float = at_least(2e-3, 0.0)
    input: TeacherInputConfig = field(default_factory=TeacherInputConfig)
    # Before distilling, every teacher's validation accuracy must reach this floor (0: chance plus
    # 15% of the way from chance to perfect, e.g. 0.235 for 10 classes); false skips the check.
    min_accuracy: float = between(0.0, 0.0, 1.0)
    check_accuracy: bool = True


@dataclass(frozen=True)
class StudentConfig:
    """The student: the built-in ConvNet sized by width/depth, or the user's factory."""

    factory: str = ""
    family: str = choice("convnet", *FAMILY_NAMES)
    width: int = at_least(16, 1)
    depth: int = between(2, 1, 4)


@dataclass(frozen=True)
class DistillConfig:
    """Hinton KD: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y), plus
    the optional methods below (docs/distillation.md says when to use each)."""

    temperature: float = at_least(4.0, 1e-3)
    alpha: float = between(0.9, 0.0, 1.0)
    epochs: int = at_least(80, 1)
    batch_size: int = at_least(64, 1)
    lr: float = at_least(5e-3, 0.0)
    # Feature KD: student layer -> teacher layer, e.g. {"features.5" = "features.11"}.
    hint_layers: dict[str, str] = field(default_factory=dict, metadata={"example": '{"features.5" = "features.11"}'})
    hint_weight: float = at_least(1.0, 0.0)  # FitNets MSE through a learned 1x1 adapter
    attention_weight: float = at_least(0.0, 0.0)  # attention transfer on the same layer pairs
    # Self-distillation: born-again generations (each distills from the one before), and
    # auxiliary heads on these student layers taught by the student's own final head.
    generations: int = at_least(1, 1)
    self_heads: list[str] = field(default_factory=list)
    self_head_weight: float = at_least(1.0, 0.0)
    # Progressive distillation: teacher -> assistants (in order) -> student, e.g. [{width = 32, depth = 2}].
    assistants: list[dict] = field(default_factory=list, metadata={"table": {"width": int, "depth": int},
                                                                    "example": "[{width = 32, depth = 2}]"})
    # Consistent augmentation: teacher and student see the same augmented batch (images or signals,
    # by the data's layout); the teacher then runs on every batch.
    augment: bool = False
    # Teacher outputs: "cached" computes them once (and the stage cache keeps them across builds),
    # "per_step" on every batch; "auto" caches unless augmentation or feature hints need them live.
    teacher_outputs: str = choice("auto", "auto", "cached", "per_step")
    nproc: int = at_least(1, 1)  # processes under torchrun (DistributedDataParallel, gloo on CPU), per node
    # Several machines: every node runs the same build with its node_rank; node 0 listens at rendezvous.
    nnodes: int = at_least(1, 1)
    node_rank: int = at_least(0, 0)
    rendezvous: str = field(default="", metadata={"pattern": (r"([^\s:]+:\d+)?", "HOST:PORT of node 0, e.g. 10.0.0.1:29500")})
    # torch threads per training process (teacher and student); 0: this machine's cores divided among
    # the processes. Set, never left to torch: oversubscribed threads on a shared 2-core host made a
    # training step 10x slower.
    threads: int = at_least(0, 0)
    # Worker processes per training process that decode image files for the data loader; -1: this
    # machine's cores divided among the processes; 0: decode in the training process. (Arrays in
    # memory are always sliced in the training process.) Never changes what is trained.
    loader_workers: int = at_least(-1, -1)
    # Quantization-aware distillation after KD: fake-quant fine-tuning in the profile's int8 scheme.
    qat_epochs: int = at_least(0, 0)
    qat_lr: float = at_least(5e-4, 0.0)


@dataclass(frozen=True)
class ExportConfig:
    opset: int = between(18, 13, 23)  # 18: the torch.onnx (dynamo) exporter's native opset
    parity_rtol: float = at_least(1e-3, 0.0)
    parity_atol: float = at_least(1e-4, 0.0)
    parity_samples: int = at_least(64, 1)


@dataclass(frozen=True)
class SimplifyConfig:
    enabled: bool = True  # false is an explicit opt-out, recorded in the manifest


@dataclass(frozen=True)
class QuantizeConfig:
    format: str = choice("QDQ", "QDQ", "QOperator")
    per_channel: bool = True
    activation_type: str = choice("QUInt8", "QUInt8", "QInt8")
    weight_type: str = choice("QInt8", "QInt8", "QUInt8")
    calibrate_method: str = choice("MinMax", "MinMax", "Entropy", "Percentile")
    calibration_samples: int = at_least(256, 1)
    reduce_range: bool = False  # 7-bit weights, for x86 CPUs without VNNI
    exclude_nodes: list[str] = field(default_factory=list)  # node names kept in float
    # Search: try every recipe the device can run, ship the fastest within the accuracy budget.
    search: bool = False
    max_accuracy_drop: float = at_least(1.0, 0.0)  # percentage points of val accuracy vs the fp32 student
    require_int8: bool = False  # if no int8 recipe fits the budget: error (true) or ship fp32 (false)
    fallback_max_nodes: int = at_least(4, 0)  # most sensitive nodes kept in float to repair a recipe
    search_min_seconds: float = at_least(1.0, 0.0)  # timed running per candidate, over 5 interleaved rounds
    # Quantization-aware distillation of int8 against the float model (export/qdq_distill.py):
    # optimize --distill, or when post-training int8 misses the budget and distill is on.
    distill: bool = False
    distill_epochs: int = at_least(8, 1)
    distill_max_seconds: float = at_least(900.0, 1.0)  # training stops past this, keeping what it learned


@dataclass(frozen=True)
class BenchmarkConfig:
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    # Per provider, options as onnxruntime takes them, e.g. {CUDAExecutionProvider = {device_id = 0}}.
    provider_options: dict[str, dict] = field(default_factory=dict)
    allow_cpu_fallback: bool = False  # run on the CPU when the providers are missing (always recorded)
    threads: int = at_least(1, 1)
    batch_size: int = between(1, 1, 4096)  # latency of one call at this batch; larger ones do not fit a device
    warmup_runs: int = at_least(20, 0)
    timed_runs: int = at_least(300, 1)  # at least this many timed runs...
    min_seconds: float = at_least(2.0, 0.0)  # ...and at least this long
    cold_start_runs: int = at_least(3, 1)
    # A measurement (one model at one setting) is stopped past this many seconds: a model whose
    # loops never end, or a device that crawls, fails with this limit named instead of hanging.
    time_limit_s: float = at_least(600.0, 1.0)
    # Text bundles: the sequence lengths (tokens) timed, none longer than the model reads.
    sequence_lengths: list[int] = positive_ints([16, 64, 128], example="[16, 64, 128]")


@dataclass(frozen=True)
class BudgetConfig:
    """Device budgets; 0 means no budget. Recorded next to the measured figures."""

    max_latency_ms: float = at_least(0.0, 0.0)
    max_size_bytes: int = at_least(0, 0)
    min_accuracy: float = between(0.0, 0.0, 1.0)  # test accuracy of the shipped model
    # Budget-driven build: sweep student sizes, ship the smallest that meets the budgets.
    sweep: bool = False
    sweep_widths: list[int] = positive_ints([4, 8, 16, 32], example="[8, 16]")
    sweep_depths: list[int] = positive_ints([1, 2, 3], example="[1, 2]")
    estimate_slack: float = at_least(2.0, 1.0)  # skip sizes whose estimate exceeds slack x latency budget
    ship_best_effort: bool = False  # when no size meets both budgets: ship the closest (true) or nothing


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    device: DeviceConfig = field(default_factory=DeviceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    simplify: SimplifyConfig = field(default_factory=SimplifyConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    profile: str = ""  # the resolved profile's name, set by load_config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ISA_FEATURES = {
    "x86_64": ("sse4_2", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx"),
    "aarch64": ("neon", "dotprod", "i8mm", "fp16", "sve"),
}

# A profile names what a device needs; how to train belongs in a config file.
PROFILE_SECTIONS = ("device", "export", "quantize", "benchmark", "budget")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into a ConfigError naming the file."""
    regular_file(path, error=ConfigError)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", "check the path") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})", "fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read", "fix the file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value); value parsed as TOML, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected section.key=value", "e.g. --set quantize.per_channel=false")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


@dataclass(frozen=True)
class Setting:
    """One typed value from a command-line flag: errors about it name the flag the user typed."""

    key: str  # "quantize.max_accuracy_drop"
    value: Any
    origin: str  # "--max-accuracy-drop"


# What a setting given on the command line also turns on: a budget flag means a size sweep, an
# accuracy budget the recipe search. Applied by load_config, so every caller of the library gets it.
IMPLIED_BY = {
    "budget.max_latency_ms": ("budget.sweep", True),
    "budget.min_accuracy": ("budget.sweep", True),
    "quantize.max_accuracy_drop": ("quantize.search", True),
}


def implied_settings(settings: list[Setting] | tuple) -> list[Setting]:
    """`settings` with what each implies (IMPLIED_BY) added before it, named after the flag that implied it."""
    given = {setting.key for setting in settings}
    implied = {IMPLIED_BY[s.key][0]: Setting(*IMPLIED_BY[s.key], s.origin) for s in settings
               if s.key in IMPLIED_BY and IMPLIED_BY[s.key][0] not in given}
    return [*implied.values(), *settings]


def load_config(
    profile: str | None = None, config_file: Path | None = None, overrides: list[str] | tuple = (),
    settings: list[Setting] | tuple = (),
) -> BuildConfig:
    """Resolve a profile (shipped name or .toml path), a config file, `--set` overrides and typed
    settings from flags (in that order of precedence, last wins) into a BuildConfig."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if profile:
        profile_name, path = profile_path(profile)
        profile_origin = str(path)
        raw_profile = read_toml(path)
        for section in raw_profile:
            if section not in PROFILE_SECTIONS:
                hint = f"a profile holds only [{'], ['.join(PROFILE_SECTIONS)}]; put training settings in --config"
                raise ConfigError(f"{profile_origin}: section '{section}' does not belong in a device profile", hint)
        _merge(merged, raw_profile, profile_origin, origins, [])
        merged["profile"] = profile_name
    if config_file is not None:
        _merge(merged, read_toml(config_file), str(config_file), origins, [])
    for text in overrides:
        path, value = parse_override(text)
        nested: dict[str, Any] = value
        for part in reversed(path):
            nested = {part: nested}
        _merge(merged, nested, f"--set {text}", origins, [])
    for setting in implied_settings(settings):
        nested = setting.value
        for part in reversed(setting.key.split(".")):
            nested = {part: nested}
        _merge(merged, nested, setting.origin, origins, [])
    config = build_dataclass(BuildConfig, merged, origins, [])
    _check_isa(config.device, origins)
    return config


def _check_isa(device: DeviceConfig, origins: dict[str, str]) -> None:
    valid = ISA_FEATURES[device.arch]
    for feature in device.isa:
        if feature not in valid:
            raise ConfigError(f"{origins.get('device.isa', 'config')}: 'device.isa' names '{feature}', which is not an "
                              f"{device.arch} feature", did_you_mean(feature, valid))


def config_from_dict(raw: dict[str, Any]) -> BuildConfig:
    """The inverse of BuildConfig.to_dict (e.g. to hand a resolved config to worker processes)."""
    return build_dataclass(BuildConfig, raw, {}, [])


def _merge(into: dict, new: dict, origin: str, origins: dict[str, str], prefix: list[str]) -> None:
    for key, value in new.items():
        path = prefix + [key]
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, origins, path)
        else:
            into[key] = value
        _record_origin(origins, path, value, origin)


def _record_origin(origins: dict[str, str], path: list[str], value: Any, origin: str) -> None:
    origins[".".join(path)] = origin
    if isinstance(value, dict):
        for key, sub in value.items():
            _record_origin(origins, path + [key], sub, origin)


