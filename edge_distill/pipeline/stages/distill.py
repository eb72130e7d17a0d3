"""The distill stage: the student, by the configured methods (distill/methods.py), in this process
or in several under torchrun."""

from __future__ import annotations

import dataclasses

from edge_distill.pipeline.stages.base import ConfiguredStage, architecture, factory_files, teacher_files


class DistillStage(ConfiguredStage):
    name = "distill"
    trains = True
    description = ("Train the student on the teacher's soft targets, the labels and any transfer data "
                   "(--nproc N: DDP).")
    version = 2
    inputs = ("dataset.npz", "teacher.model", "teacher_logits.npy")
    outputs = ("student.pt", "distill.json")

    def params(self):
        # Where the processes run (nnodes, node_rank, rendezvous) and how many workers read their
        # data do not change what they train.
        distill = dataclasses.asdict(self.config.distill)
        for key in ("node_rank", "rendezvous", "loader_workers"):
            distill.pop(key)
        params = {
            "teacher": architecture(self.config.teacher),
            "ensemble_weights": self.config.teacher.ensemble_weights,
            "student": dataclasses.asdict(self.config.student),
            "distill": distill,
            "seed": self.config.seed,
        }
        if self.config.distill.qat_epochs:  # QAT trains in the profile's int8 scheme
            quantize = self.config.quantize
            params["qat_scheme"] = {"per_channel": quantize.per_channel, "activation_type": quantize.activation_type}
        return params

    def external_files(self):
        files = factory_files(("teacher", self.config.teacher.factory), ("student", self.config.student.factory))
        return files | {k: v for k, v in teacher_files(self.config).items() if k.startswith("teacher.ensemble")}

    def check(self):
        from edge_distill.distill.methods import check_methods
        from edge_distill.distill.student import teacher_outputs_mode

        check_methods(self.config)
        teacher_outputs_mode(self.config.distill)
        launch(self.config).check(config_keys=True)

    def run(self, inputs, out, progress):
        if self.config.distill.nproc > 1 or self.config.distill.nnodes > 1:
            from edge_distill.distill.distributed import run_distributed

            run_distributed("image-student", {"config": self.config.to_dict(), "out": str(out),
                                              "inputs": {k: str(v) for k, v in inputs.items()}},
                            launch(self.config), progress)
        else:
            from edge_distill.distill.student import train_student

            train_student(self.config, inputs["dataset.npz"], inputs["teacher.model"], inputs["teacher_logits.npy"],
                          out, progress)


def launch(config):
    """The build's torchrun launch, from its distill section."""
    from edge_distill.distill.distributed import Launch

    cfg = config.distill
    return Launch(cfg.nproc, cfg.nnodes, cfg.node_rank, cfg.rendezvous)
