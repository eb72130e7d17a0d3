import numpy as np

from edge_distill.onnx_model import TensorSpec
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


def test_no_cosine_over_one_value_and_no_top1_for_a_state_the_model_hands_back():
    """A cosine over a 1-element output is always 1, and an LSTM state shaped (layers, batch,
    hidden) like the model's state input is not a class-score vector."""
    rng = np.random.default_rng(1)
    speech = TensorSpec("speech", "float32", ("batch", 1))
    state_in, state_out = (TensorSpec(name, "float32", (2, "batch", 16)) for name in ("state", "state_next"))
    reference = {"speech": rng.random((20, 1, 1)), "state_next": rng.standard_normal((20, 2, 1, 16))}
    candidate = {name: values + 0.01 for name, values in reference.items()}
    report = output_fidelity(reference, candidate, [speech, state_out], [state_in])
    assert "cosine" not in report["speech"] and "top1_agreement" not in report["speech"]
    assert "cosine" in report["state_next"] and "top1_agreement" not in report["state_next"]
    assert "top1_agreement" in output_fidelity(reference, candidate, [speech, state_out])["state_next"]
