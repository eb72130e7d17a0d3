import pytest

from edge_distill.config import load_config, parse_override
from edge_distill.errors import ConfigError, ProfileNotFoundError
from edge_distill.profiles.catalog import list_profiles


def test_every_shipped_profile_loads_and_validates():
    names = list_profiles()
    assert {"rpi4", "rpi5", "android-arm64", "x86-avx512", "cuda"} <= set(names)
    for name in names:
        config = load_config(name)
        assert config.profile == name
        assert config.device.name == name
        assert config.benchmark.providers


def test_layers_apply_in_order(tmp_path):
    file = tmp_path / "train.toml"
    file.write_text("seed = 3\n[distill]\nalpha = 0.5\ntemperature = 2.0\n")
    config = load_config("rpi4", file, ["distill.alpha=0.25"])
    assert (config.seed, config.distill.temperature, config.distill.alpha) == (3, 2.0, 0.25)
    assert config.benchmark.threads == 4  # from the profile
    assert config.distill.epochs == 80  # the default


def test_unknown_key_names_file_and_closest_key(tmp_path):
    file = tmp_path / "train.toml"
    file.write_text("[distill]\ntemprature = 2.0\n")
    with pytest.raises(ConfigError) as e:
        load_config("rpi4", file)
    assert str(file) in e.value.message and "distill.temprature" in e.value.message
    assert "temperature" in e.value.hint


def test_wrong_type_and_out_of_range_values():
    with pytest.raises(ConfigError, match="'distill.epochs' must be int"):
        load_config("rpi4", None, ["distill.epochs=ten"])
    with pytest.raises(ConfigError, match="above the maximum"):
        load_config("rpi4", None, ["distill.alpha=1.5"])
    with pytest.raises(ConfigError, match="'quantize.format' = 'QDQQ' is not valid"):
        load_config("rpi4", None, ["quantize.format=QDQQ"])


def test_unknown_profile_suggests_the_closest():
    with pytest.raises(ProfileNotFoundError) as e:
        load_config("rpi-4")
    assert "rpi4" in e.value.hint


def test_user_profile_file_cannot_hold_training_settings(tmp_path):
    profile = tmp_path / "board.toml"
    profile.write_text('[device]\nname = "board"\narch = "aarch64"\n[distill]\nepochs = 1\n')
    with pytest.raises(ConfigError, match="'distill' does not belong in a device profile"):
        load_config(str(profile))
    profile.write_text('[device]\nname = "board"\narch = "aarch64"\n[benchmark]\nthreads = 2\n')
    config = load_config(str(profile))
    assert (config.profile, config.device.arch, config.benchmark.threads) == ("board", "aarch64", 2)


def test_invalid_toml_names_the_file(tmp_path):
    file = tmp_path / "broken.toml"
    file.write_text("[distill\n")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        load_config("rpi4", file)


def test_parse_override_reads_toml_values_and_falls_back_to_strings():
    assert parse_override("quantize.per_channel=false") == (["quantize", "per_channel"], False)
    assert parse_override("benchmark.providers=['CPUExecutionProvider']") == (["benchmark", "providers"], ["CPUExecutionProvider"])
    assert parse_override("data.source=my_data.npz") == (["data", "source"], "my_data.npz")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("quantize.per_channel")


def test_every_profile_names_only_features_of_its_own_architecture():
    from edge_distill.config import ISA_FEATURES

    for name in list_profiles():
        device = load_config(name).device
        assert device.isa and set(device.isa) <= set(ISA_FEATURES[device.arch]), name
    assert "dotprod" not in load_config("rpi4").device.isa  # the Cortex-A72 has no int8 dot product


def test_what_a_flag_implies_is_set_by_the_config_for_every_caller():
    from edge_distill.config import Setting

    config = load_config("rpi4", settings=[Setting("budget.max_latency_ms", 5.0, "--max-latency-ms"),
                                           Setting("quantize.max_accuracy_drop", 0.5, "--max-accuracy-drop")])
    assert config.budget.sweep and config.quantize.search
    # A value given for the implied key itself wins.
    config = load_config("rpi4", settings=[Setting("quantize.max_accuracy_drop", 0.5, "--max-accuracy-drop"),
                                           Setting("quantize.search", False, "--no-search")])
    assert not config.quantize.search and config.quantize.max_accuracy_drop == 0.5
