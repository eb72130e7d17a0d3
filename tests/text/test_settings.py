"""text/settings.py: what one text build is, its defaults resolved where it is made."""

import dataclasses

from edge_distill.config import load_config
from edge_distill.device.runner import usable_threads
from edge_distill.text.settings import TextBuildSettings


def test_threads_resolve_once_here_and_the_device_is_timed_at_its_own_count():
    rpi4 = load_config("rpi4")  # 4 threads
    here = TextBuildSettings(profile=rpi4)
    assert here.threads == here.distill.threads == here.benchmark.threads == usable_threads(4)
    assert TextBuildSettings().threads == 2 and TextBuildSettings(threads=3, profile=rpi4).benchmark.threads == 3
    # Timed over SSH (device.host): the Pi's 4 threads, whatever this host has; training stays here.
    on_pi = TextBuildSettings(profile=dataclasses.replace(rpi4, device=dataclasses.replace(rpi4.device, host="pi")))
    assert on_pi.benchmark.threads == 4 and on_pi.distill.threads == usable_threads(4)


def test_the_quality_budget_comes_from_the_profile_unless_given():
    strict = load_config("rpi4", overrides=["quantize.max_accuracy_drop=0.5"])
    assert TextBuildSettings(profile=strict).max_quality_drop == 0.5 and TextBuildSettings().max_quality_drop == 1.0
    assert TextBuildSettings(max_quality_drop=0.25).max_quality_drop == 0.25
