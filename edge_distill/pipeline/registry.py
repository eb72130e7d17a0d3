"""The build's stages in order, and the artifacts each produces: the one list the runner, the CLI's
stage commands and the docs derive from."""

from __future__ import annotations

from edge_distill.pipeline.stages.base import ConfiguredStage
from edge_distill.pipeline.stages.benchmark import BenchmarkStage
from edge_distill.pipeline.stages.data import DataStage
from edge_distill.pipeline.stages.describe import DescribeStage
from edge_distill.pipeline.stages.distill import DistillStage
from edge_distill.pipeline.stages.export import ExportStage
from edge_distill.pipeline.stages.package import PackageStage
from edge_distill.pipeline.stages.quantize import QuantizeStage
from edge_distill.pipeline.stages.simplify import SimplifyStage
from edge_distill.pipeline.stages.teacher import TeacherStage

STAGES: tuple[type[ConfiguredStage], ...] = (
    DataStage, TeacherStage, DistillStage, ExportStage, SimplifyStage, QuantizeStage, DescribeStage, BenchmarkStage,
    PackageStage,
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
ARTIFACTS = tuple(name for stage in STAGES for name in stage.outputs)
PRODUCER = {name: stage for stage in STAGES for name in stage.outputs}
