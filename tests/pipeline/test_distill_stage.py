"""The distill stage: its methods, the teacher-output cache, teachers from files, several processes."""

import json

import numpy as np
import onnx
import pytest
import torch

from edge_distill.errors import ConfigError, ModelError
from edge_distill.export.onnx_export import export_onnx
from edge_distill.models.families import ConvNet
from edge_distill.api import build_bundle
from edge_distill.pipeline.build import run_pipeline
from tests.conftest import tiny_config


def _distill(cache, *overrides, progress=None):
    run = run_pipeline(tiny_config(*overrides), cache, "distill", progress=progress or (lambda _: None))
    return run, json.loads(run.artifacts["distill.json"].read_text())


def test_teacher_outputs_mode_is_picked_logged_and_reused_across_builds(tiny_cache):
    lines = []
    run, report = _distill(tiny_cache, "distill.temperature=2.5", progress=lines.append)
    assert report["teacher_outputs"]["mode"] == "cached"
    assert any(line.startswith("teacher outputs: cached (inputs are not augmented") for line in lines)
    # A new temperature retrains the student, but the teacher and its outputs come from the cache.
    assert {s.stage: s.cached for s in run.steps} == {"data": True, "teacher": True, "distill": False}
    _, augmented = _distill(tiny_cache, "distill.augment=true")
    assert augmented["teacher_outputs"] == {"mode": "per_step",
                                            "why": "augmentation is on: the teacher labels each augmented batch"}
    assert augmented["augmentation"] == "image"
    lines.clear()
    with pytest.raises(ConfigError, match="distill.teacher_outputs = 'cached' cannot be used: augmentation is on"):
        _distill(tiny_cache, "distill.augment=true", "distill.teacher_outputs=cached", "seed=5", progress=lines.append)
    assert lines == []  # refused before any stage ran (seed 5 has no cached data or teacher)


def test_cached_and_per_step_teacher_outputs_train_the_same_student(tiny_cache):
    _, cached = _distill(tiny_cache, "distill.teacher_outputs=cached", "distill.epochs=2")
    _, live = _distill(tiny_cache, "distill.teacher_outputs=per_step", "distill.epochs=2")
    assert cached["val_accuracy"] == pytest.approx(live["val_accuracy"], abs=1e-9)


def test_label_scarce_run_uses_the_transfer_set(tiny_cache):
    _, report = _distill(tiny_cache, "data.labeled_samples=50")
    assert report["samples"] == {"labeled": 50, "transfer": 1167 - 50}
    assert "unlabeled transfer set labeled by the teacher" in report["methods"]


def test_progressive_chain_and_born_again_generations(tiny_cache):
    _, chain = _distill(tiny_cache, "distill.assistants=[{width=6, depth=1}]")
    assert [link["model"] for link in chain["chain"]] == ["assistant 1 (6x1)", "student"]
    assert chain["chain"][0]["params"] > chain["chain"][1]["params"]
    _, born_again = _distill(tiny_cache, "distill.generations=2")
    assert [link["model"] for link in born_again["chain"]] == ["student generation 1", "student generation 2"]
    with pytest.raises(ConfigError, match="cannot be combined with distill.assistants"):
        _distill(tiny_cache, "distill.generations=2", 'distill.hint_layers={"features.2"="features.2"}')


@pytest.mark.slow
def test_two_processes_match_one_within_tolerance(tiny_cache):
    settings = ("distill.epochs=8", "teacher.epochs=8")
    one_run, one = _distill(tiny_cache, *settings)
    two_run, two = _distill(tiny_cache, *settings, "distill.nproc=2")
    assert two["processes"] == 2 and one["processes"] == 1
    assert one["val_accuracy"] > 0.2  # it learned (chance: 0.1), so the comparison means something
    # Same global batches and schedule; each rank normalizes its half batch with its own BatchNorm
    # statistics, so the runs are close, not identical.
    assert abs(two["val_accuracy"] - one["val_accuracy"]) <= 0.03
    weights = [torch.load(run.artifacts["student.pt"], weights_only=True) for run in (one_run, two_run)]
    gaps = {k: (weights[0][k].float() - weights[1][k].float()).abs().max().item() for k in weights[0]}
    assert 0 < max(gaps.values()) < 0.1, gaps
    # A user error inside the workers reaches the caller as the same one-line error.
    with pytest.raises(ConfigError, match="the teacher has no layer 'features.99'"):
        _distill(tiny_cache, "distill.nproc=2", 'distill.hint_layers={"features.2" = "features.99"}')


@pytest.mark.slow
def test_onnx_and_torchscript_teachers_build_a_bundle(tmp_path):
    torch.manual_seed(0)
    sample = torch.randn(3, 1, 8, 8)
    main_teacher, other = ConvNet((1, 8, 8), 10, 8, 1).eval(), ConvNet((1, 8, 8), 10, 6, 1).eval()
    export_onnx(main_teacher, sample.numpy(), tmp_path / "teacher.onnx", 18)
    torch.jit.save(torch.jit.trace(other, sample), tmp_path / "other.pt")
    config = tiny_config(f"teacher.file={tmp_path / 'teacher.onnx'}", f"teacher.ensemble=['{tmp_path / 'other.pt'}']",
                         "teacher.ensemble_weights=[2.0, 1.0]")
    build_bundle(config, tmp_path / "dist", tmp_path / "cache")
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    training = manifest["training"]
    assert training["teacher"]["format"] == "onnx" and [m["format"] for m in training["teacher"]["members"]] == [
        "onnx", "torchscript"]
    assert "multi-teacher: 2 teachers, weighted mean of softened distributions" in training["distillation"]["methods"]
    # A black-box teacher's size is what its file holds (BatchNorm already folded by the exporter).
    initializers = onnx.load(str(tmp_path / "teacher.onnx")).graph.initializer
    assert training["export"]["teacher"] == {"params": sum(int(np.prod(t.dims)) for t in initializers),
                                             "format": "onnx", "exported": False}


@pytest.mark.slow
def test_one_dimensional_signals_build_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 32)
    y = np.arange(90) % 3
    x = np.sin(2 * np.pi * (y[:, None] + 1) * 2 * t) + 0.3 * rng.standard_normal((90, 32))
    np.savez(tmp_path / "signals.npz", x=x.astype(np.float32), y=y, labels=np.array(["slow", "mid", "fast"]))
    config = tiny_config(f"data.source={tmp_path / 'signals.npz'}", "distill.augment=true", "distill.epochs=30",
                         "teacher.epochs=30", "teacher.batch_size=16", "distill.batch_size=16")
    build_bundle(config, tmp_path / "dist", tmp_path / "cache")
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == ["batch", 1, 32] and manifest["preprocessing"]["layout"] == "NCL"
    assert manifest["training"]["distillation"]["augmentation"] == "signal"
    accuracy = {m["variant"]: m["accuracy"] for m in manifest["metrics"]}
    # Three well-separated frequencies (chance is 0.33); the int8 student keeps the fp32 one's accuracy.
    assert accuracy["teacher_fp32"] > 0.9 and accuracy["student_int8"] > 0.7
    assert abs(accuracy["student_int8"] - accuracy["student_fp32"]) <= 0.1


@pytest.mark.parametrize("kind", ["torchscript", pytest.param("torch.export", marks=pytest.mark.slow)])  # 4 s
def test_torch_teacher_files_are_exported_for_the_benchmark(tmp_path, tiny_cache, kind):
    torch.manual_seed(0)
    teacher = ConvNet((1, 8, 8), 10, 8, 1).eval()
    sample = torch.randn(3, 1, 8, 8)
    path = tmp_path / "teacher.pt"
    if kind == "torchscript":
        torch.jit.save(torch.jit.trace(teacher, sample), path)
    else:
        torch.export.save(torch.export.export(teacher, (sample,), dynamic_shapes=({0: torch.export.Dim("batch")},)), path)
    run = run_pipeline(tiny_config(f"teacher.file={path}"), tiny_cache, "export")
    report = json.loads(run.artifacts["export.json"].read_text())["teacher"]
    assert report["format"] == kind and report["params"] == sum(p.numel() for p in teacher.parameters())
    assert max(report["parity_max_abs_diff"].values()) < 1e-4
    assert json.loads(run.artifacts["teacher.json"].read_text())["trained_here"] is False


def test_onnx_teacher_with_external_data_as_torch_writes_it_by_default(tiny_cache, tmp_path):
    """`torch.onnx.export(dynamo=True)` writes m.onnx + m.onnx.data: the teacher stage keeps one
    self-contained copy, and new weights in the .data file invalidate the cached teacher."""
    torch.manual_seed(0)
    module = ConvNet((1, 8, 8), 10, 4, 1).eval()
    program = torch.onnx.export(module, (torch.zeros(2, 1, 8, 8),), dynamo=True,
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.save(str(tmp_path / "t.onnx"), external_data=True)
    assert (tmp_path / "t.onnx.data").is_file()
    config = tiny_config(f"teacher.file='{tmp_path / 't.onnx'}'")
    run = run_pipeline(config, tiny_cache, "export")
    assert not onnx.load(str(run.artifacts["teacher.model"]), load_external_data=False).graph.initializer[0].external_data
    with torch.no_grad():
        expected = module(torch.ones(3, 1, 8, 8)).numpy()
    from edge_distill.export.onnx_io import run_onnx

    (logits,) = run_onnx(run.artifacts["teacher_fp32.onnx"], np.ones((3, 1, 8, 8), np.float32)).values()
    np.testing.assert_allclose(logits, expected, atol=1e-4)  # the benchmark measures the user's weights
    data = bytearray((tmp_path / "t.onnx.data").read_bytes())
    data[:4] = bytes(4)  # other weights, same .onnx
    (tmp_path / "t.onnx.data").write_bytes(bytes(data))
    again = run_pipeline(config, tiny_cache, "teacher")
    assert not again.steps[-1].cached


def _teacher_trained_on_its_own_input(tmp_path, kind: str):
    """A teacher trained on digits as *it* sees them: RGB, 16x16, its own scale, mean and std."""
    from edge_distill.config import TeacherInputConfig
    from edge_distill.data.dataset import load_dataset
    from edge_distill.distill.teachers import TeacherInput

    own = TeacherInputConfig(size=[16, 16], pixel_scale=1 / 16, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25],
                             channels="gray_to_rgb")
    dataset = load_dataset(tiny_config().data, seed=0)
    prepare = TeacherInput(dataset.preprocessing, own, dataset.input_shape)
    with torch.no_grad():
        x = prepare(torch.from_numpy(dataset.x["train"]))  # (N, 3, 16, 16): what it was trained on
    y = torch.from_numpy(dataset.y["train"])
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(teacher(x), y).backward()
        optimizer.step()
    teacher.eval()
    path = tmp_path / f"own.{kind}"
    if kind == "onnx":
        export_onnx(teacher, x[:2].numpy(), path, 17)  # another opset than the build's: converted when merged
    else:
        torch.jit.save(torch.jit.trace(teacher, x[:2]), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "ts"])
def test_a_pretrained_teacher_sees_its_own_preprocessing(tmp_path, kind):
    teacher_file = _teacher_trained_on_its_own_input(tmp_path, kind)
    own = ["teacher.input.size=[16, 16]", "teacher.input.pixel_scale=0.0625", "teacher.input.mean=[0.5, 0.5, 0.5]",
           "teacher.input.std=[0.25, 0.25, 0.25]", "teacher.input.channels='gray_to_rgb'"]
    config = tiny_config(f"teacher.file='{teacher_file}'", "teacher.check_accuracy=true", *own)
    run = run_pipeline(config, tmp_path / "cache", "export")
    report = json.loads(run.artifacts["teacher.json"].read_text())
    assert report["val_accuracy"] > 0.9 and report["input"]["shape"] == [3, 16, 16]  # it sees what it learned on
    # The exported teacher takes the build's inputs (1x8x8) and scores like the teacher itself.
    from edge_distill.data.dataset import Dataset
    from edge_distill.export.onnx_io import run_onnx

    exported = onnx.load(str(run.artifacts["teacher_fp32.onnx"]))
    assert [d.dim_value or d.dim_param for d in exported.graph.input[0].type.tensor_type.shape.dim][1:] == [1, 8, 8]
    dataset = Dataset.load(run.artifacts["dataset.npz"])
    (logits,) = run_onnx(run.artifacts["teacher_fp32.onnx"], dataset.x["test"]).values()
    assert float((logits.argmax(1) == dataset.y["test"]).mean()) == pytest.approx(report["test_accuracy"], abs=0.01)
    with pytest.raises(ModelError, match="cannot run on inputs|takes input"):  # fed the build's own inputs instead
        run_pipeline(tiny_config(f"teacher.file='{teacher_file}'", "teacher.check_accuracy=true"), tmp_path / "c2",
                     "teacher")


def test_teacher_input_is_for_pretrained_teachers_only(tmp_path):
    with pytest.raises(ConfigError, match="teacher.input describes a pretrained teacher's own preprocessing"):
        run_pipeline(tiny_config("teacher.input.size=[16, 16]"), tmp_path / "cache", "teacher")


@pytest.mark.slow
def test_two_nodes_on_one_machine_train_one_student(tmp_path):
    """Two torchrun agents on 127.0.0.1, each running the build as a node would: one student,
    written alike on both nodes."""
    import socket
    import subprocess
    import sys

    from tests.conftest import TINY

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = [arg for item in TINY for arg in ("--set", item)]
    nodes = [subprocess.Popen([sys.executable, "-m", "edge_distill.cli", "distill", "--profile", "rpi4", *settings,
                               "--nnodes", "2", "--node-rank", str(rank), "--rendezvous", f"127.0.0.1:{port}",
                               "--cache-dir", str(tmp_path / f"node{rank}"), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    results = [node.communicate(timeout=300) for node in nodes]
    for node, (stdout, stderr) in zip(nodes, results):
        assert node.returncode == 0, stderr[-2000:]
    outputs = [json.loads(stdout)["outputs"] for stdout, _ in results]
    weights = [open(o["student.pt"], "rb").read() for o in outputs]
    reports = [json.loads(open(o["distill.json"]).read()) for o in outputs]
    assert weights[0] == weights[1] and reports[0] == reports[1]  # the same student on both nodes
    assert reports[0]["processes"] == 2
