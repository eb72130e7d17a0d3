"""Choosing the next token: greedy, top-k and nucleus sampling."""

import numpy as np

from edge_distill.device.decoder import choose


def test_temperature_zero_is_greedy():
    assert choose(np.asarray([0.1, 3.0, 2.9]), 0.0, 0, 1.0, np.random.default_rng(0)) == 1


def test_top_k_and_top_p_keep_only_the_likeliest():
    rng = np.random.default_rng(0)
    logits = np.log(np.asarray([0.5, 0.3, 0.15, 0.05]))
    assert {choose(logits, 1.0, 2, 1.0, rng) for _ in range(300)} == {0, 1}
    assert {choose(logits, 1.0, 0, 0.7, rng) for _ in range(300)} == {0, 1}
    assert {choose(logits, 1.0, 0, 0.4, rng) for _ in range(50)} == {0}
    assert {choose(logits, 1.0, 0, 1.0, rng) for _ in range(2000)} == {0, 1, 2, 3}


def test_sampling_follows_the_distribution():
    rng = np.random.default_rng(1)
    logits = np.log(np.asarray([0.7, 0.2, 0.1]))
    counts = np.bincount([choose(logits, 1.0, 0, 1.0, rng) for _ in range(4000)], minlength=3) / 4000
    assert np.allclose(counts, [0.7, 0.2, 0.1], atol=0.03)
