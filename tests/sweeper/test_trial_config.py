"""The driver builds each trial's TrialConfig from the spec; the trial reads the same settings back."""

import subprocess
import sys

from sweeper.spec import DataSpec, ModelSpec, TrainingSpec, parse_spec
from sweeper.trial_config import trial_settings
from trainables.contract import Configuration, TrainingSettings, TrialConfig, TrialSettings

CONFIGURATION = Configuration(
    arch="unet", encoder="resnet18", loss="tversky", loss_params={"alpha": 0.3, "beta": 0.7}, roi_ratio=0.4
)


def spec(**data):
    return parse_spec(
        {
            "name": "c",
            "data": {"format": "synthetic", "folds": 3, **data},
            "losses": [{"name": "dice"}],
            "search": {"budget": 2},
            "training": {"epochs": 3, "lr": 1e-3},
            "resources": {"cpus_per_trial": 2},
        }
    )


def test_driver_built_config_round_trips_through_the_dict_tune_passes(tmp_path):
    settings = trial_settings(spec(label_mode="multiclass"), tmp_path / "cache")
    config = settings.for_fold(CONFIGURATION, config_id="abc", fold=2)
    as_dict = config.to_dict()
    back = TrialConfig.from_dict(as_dict)
    assert back == config and back.to_dict() == as_dict and back.configuration == CONFIGURATION
    # what the spec says reaches the trial
    assert (back.epochs, back.lr, back.cpus_per_trial, back.fold, back.config_id) == (3, 1e-3, 2.0, 2, "abc")
    assert back.cache_dir == str((tmp_path / "cache").resolve())
    assert back.activation == "softmax" and back.classes == ("background", "large_bowel", "small_bowel", "stomach")


def test_training_defaults_are_declared_once():
    """The spec's training section is the contract's TrainingSettings: a trial built from a spec that sets
    no training field has every default TrialConfig declares."""
    assert issubclass(TrainingSpec, TrainingSettings)
    assert set(TrainingSettings.model_fields) <= set(TrialConfig.model_fields)
    built = trial_settings(
        parse_spec(
            {"name": "d", "data": {"format": "synthetic"}, "losses": [{"name": "dice"}], "search": {"budget": 1}}
        ),
        "/c",
    )
    for name, field in TrainingSettings.model_fields.items():
        assert getattr(built, name) == field.get_default(call_default_factory=True), name


def test_trial_defaults_of_the_data_fields_agree_with_the_spec():
    """TrialSettings repeats a few defaults of the spec's data and model sections (so a trial can be built
    by hand, as benchmarks and tests do); they must say the same."""
    trial = TrialSettings.model_fields
    data = DataSpec.model_fields
    for name in ("context", "image_size", "augmentation"):
        assert trial[name].default == data[name].default, name
    assert trial["classes"].default == tuple(data["classes"].default)
    assert trial["encoder_weights"].default == ModelSpec.model_fields["encoder_weights"].default


def test_building_trial_settings_imports_neither_torch_nor_ray():
    code = (
        "import sys, sweeper.trial_config; "
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
