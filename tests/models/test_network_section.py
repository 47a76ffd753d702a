"""One network section per run, tagged by the model: {"model": "unet", "network": {...}} round-trips through
JSON, `from_dict` builds the class the MODELS registry names (wrong tags and foreign fields name the allowed
values), dotted overrides reach it as network.x (and as unet.x / dit.x / mlp.x for the run's own model), and each
network config adapts itself to a data shape."""

from dataclasses import replace

import pytest

from noisecraft.config import from_dict, to_dict
from noisecraft.errors import ConfigError, require
from noisecraft.models import MODELS, DiTConfig, MLPConfig, UNetConfig, network_configs
from noisecraft.models.conditioning import TokenRefinerConfig
from noisecraft.presets import PRESETS, get_preset
from noisecraft.runconfig import RunConfig, apply_run_overrides


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_with_one_tagged_network_section(name):
    config = PRESETS[name]
    data = to_dict(config)
    assert {"unet", "mlp", "dit"}.isdisjoint(data) and isinstance(data["network"], dict)
    assert isinstance(config.network, MODELS[config.model][0])
    assert from_dict(RunConfig, data, "config") == config


def test_network_section_is_built_as_the_tagged_model_config():
    dit = from_dict(RunConfig, {"model": "dit", "network": {"depth": 2}}, "config")
    assert dit.network == DiTConfig(depth=2)
    assert from_dict(RunConfig, {"model": "mlp"}, "config").network == MLPConfig()  # absent: the defaults
    assert RunConfig(model="mlp").network == MLPConfig() and RunConfig().network == UNetConfig()
    scenes = from_dict(RunConfig, {"network": {"refiner": {"kernel": 5, "pool": True}}}, "config")
    assert scenes.network.refiner == TokenRefinerConfig(kernel=5, pool=True)
    from noisecraft.models.egnn import EGNNConfig
    from noisecraft.models.mmdit import MMDiTConfig
    from noisecraft.models.point_transformer import PointTransformerConfig
    from noisecraft.models.video_dit import VideoDiTConfig
    from noisecraft.models.video_unet import VideoUNetConfig

    assert network_configs() == {"unet": UNetConfig, "mlp": MLPConfig, "dit": DiTConfig, "mmdit": MMDiTConfig,
                                 "video-unet": VideoUNetConfig, "video-dit": VideoDiTConfig,
                                 "point-transformer": PointTransformerConfig, "egnn": EGNNConfig}


def test_wrong_tag_foreign_field_and_mismatched_class_name_the_allowed_values():
    with pytest.raises(ConfigError, match=r"config.model: unknown model 'vit'; allowed: dit, egnn, mlp, mmdit, "
                       r"point-transformer, unet, video-dit, video-unet"):
        from_dict(RunConfig, {"model": "vit", "network": {}}, "config")
    with pytest.raises(ConfigError, match=r"config.network: unknown field\(s\) base_channels for model 'dit' "
                                          r"\(DiTConfig\); allowed: .*hidden_size"):
        from_dict(RunConfig, {"model": "dit", "network": {"base_channels": 48}}, "config")
    with pytest.raises(ConfigError, match=r"config: unknown field\(s\) unet; allowed: .*network"):
        from_dict(RunConfig, {"model": "unet", "unet": {}}, "config")  # the old layout (compat.py migrates it)
    with pytest.raises(ConfigError, match=r"config.network.refiner.kernel: expected an integer"):
        from_dict(RunConfig, {"network": {"refiner": {"kernel": "5"}}}, "config")
    with pytest.raises(ConfigError, match="model 'dit' needs a DiTConfig, got UNetConfig"):
        replace(get_preset("mnist"), model="dit")
    with pytest.raises(ConfigError, match="unknown model 'vit'; allowed: dit, egnn, mlp, mmdit, "
                       r"point-transformer, unet, video-dit, video-unet"):
        RunConfig(model="vit")


def test_overrides_reach_the_network_under_its_new_and_old_names():
    data = to_dict(get_preset("mnist"))
    for spelling in ("network.base_channels=48", "unet.base_channels=48"):
        assert from_dict(RunConfig, apply_run_overrides(data, [spelling])).network.base_channels == 48
    nested = apply_run_overrides(data, ["unet.refiner.kernel=3", "network.refiner.width=16"])
    assert from_dict(RunConfig, nested).network.refiner == TokenRefinerConfig(kernel=3, width=16)
    dit = to_dict(get_preset("mnist-dit"))
    assert from_dict(RunConfig, apply_run_overrides(dit, ["dit.depth=2"])).network.depth == 2
    with pytest.raises(ConfigError, match=r"override 'dit.depth=2': dit.\* sets the dit network, but this run's "
                                          r"model is 'unet'; set network.depth \(or unet.\*\), or model=dit first"):
        apply_run_overrides(data, ["dit.depth=2"])
    with pytest.raises(ConfigError, match="this run's model is 'dit'"):
        apply_run_overrides(dit, ["mlp.hidden=8"])


def test_switching_the_model_by_override_starts_from_the_new_networks_defaults():
    data = apply_run_overrides(to_dict(get_preset("mnist")), ["model=dit", "dit.depth=2", "network.hidden_size=96"])
    assert from_dict(RunConfig, data).network == DiTConfig(depth=2, hidden_size=96)
    same = apply_run_overrides(to_dict(get_preset("mnist")), ["model=unet"])  # the same model: the section is kept
    assert from_dict(RunConfig, same).network == get_preset("mnist").network


def test_each_network_config_adapts_itself_to_the_data():
    sides = []

    def side():
        sides.append(1)
        return 28

    unet = UNetConfig().for_data((3, 32, 32))
    assert unet.in_channels == 3 and unet.data_shape(side) == (3, 28, 28) and sides == [1]
    assert replace(UNetConfig(), dims=1).for_data((2, 64)).in_channels == 2
    with pytest.raises(ConfigError, match=r"UNetConfig.dims: the U-Net has dims = 2 but the data samples have "
                                          r"shape \(2,\); expected \(C, S, S\)"):
        UNetConfig().for_data((2,))
    dit = DiTConfig().for_data((4, 16, 16))
    assert (dit.in_channels, dit.input_size) == (4, 16) and dit.data_shape(side) == (4, 16, 16)
    with pytest.raises(ConfigError, match="square images"):
        DiTConfig().for_data((1, 8, 12))
    mlp = MLPConfig().for_data((5,))
    assert mlp.data_dim == 5 and mlp.data_shape(side) == (5,) and sides == [1]  # only the U-Net asks for the side
    with pytest.raises(ConfigError, match=r"flat vectors \(D,\); the data samples have shape \(1, 8, 8\)"):
        MLPConfig().for_data((1, 8, 8))


def test_require_raises_a_config_error_naming_where():
    require(True, "train.lr", "never raised")
    with pytest.raises(ConfigError, match=r"^train.lr: must be > 0, got 0$"):
        require(False, "train.lr", "must be > 0, got 0")
