import numpy as np

from edge_distill.export.model_io import TensorSpec
from edge_distill.measure.fidelity import output_fidelity

SCORES = TensorSpec("scores", "float32", ("batch", 5))
MAP = TensorSpec("map", "float32", ("batch", 1, "h", "w"))


def test_fidelity_per_output_snr_cosine_and_top1_only_for_class_scores():
    rng = np.random.default_rng(0)
    reference = {"scores": rng.standard_normal((50, 1, 5)), "map": rng.standard_normal((50, 1, 1, 4, 4))}
    noise = 0.1 * rng.standard_normal((50, 1, 5))
    report = output_fidelity(reference, {"scores": reference["scores"] + noise, "map": reference["map"]}, [SCORES, MAP])
    expected = 10 * np.log10(np.sum(reference["scores"] ** 2) / np.sum(noise ** 2))
    assert abs(report["scores"]["snr_db"] - expected) < 1e-9 and 15 < expected < 25
    assert report["scores"]["max_abs_error"] == np.abs(noise).max()
    assert 0.98 < report["scores"]["cosine"] < 1.0 and 0.8 < report["scores"]["top1_agreement"] <= 1.0
    assert report["map"] == {"snr_db": None, "max_abs_error": 0.0, "cosine": 1.0}  # identical; no top-1 for a map
