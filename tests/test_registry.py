"""After ``import recbole_hdccf``, HDCCF resolves everywhere RecBole resolves a model name, its yaml
defaults load in RecBole's precedence order, RecBole's own models are unchanged, and an unknown
name fails with a clear message."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT
from recbole.config import Config
from recbole.trainer import Trainer
from recbole.utils import ModelType, get_model, get_trainer

import recbole_hdccf
from recbole_hdccf import registry
from recbole_hdccf.hdccf import HDCCF
from recbole_hdccf.registry import UnknownModelError, UnknownSettingError
from recbole_hdccf.trainer import HDCCFTrainer

HDCCF_YAML = REPO_ROOT / "properties" / "HDCCF.yaml"
RECBOLE_MODELS = ["BPR", "NeuMF", "ENMF", "LightGCN", "SimpleX"]


def yaml_defaults() -> dict:
    return yaml.safe_load(HDCCF_YAML.read_text(encoding="utf-8"))


def checkpoints(folder) -> list[Path]:
    """The best-model checkpoints in ``folder`` (not HDCCFTrainer's ``-last`` ones)."""
    return sorted(p for p in Path(folder).glob("*.pth") if not p.stem.endswith("-last"))


# ------------------------------------------------------------------ name resolution
def test_get_model_resolves_hdccf():
    assert get_model("HDCCF") is HDCCF
    assert recbole_hdccf.HDCCF is HDCCF
    assert "HDCCF" in recbole_hdccf.PLUGIN_MODELS


def test_get_trainer_returns_hdccf_trainer():
    assert get_trainer(ModelType.GENERAL, "HDCCF") is HDCCFTrainer
    assert issubclass(HDCCFTrainer, Trainer)
    assert get_trainer(ModelType.GENERAL, "BPR") is Trainer  # RecBole's models keep theirs


def test_registration_is_idempotent():
    registry.register_all()
    recbole_hdccf.compat.apply()
    assert get_model("HDCCF") is HDCCF
    assert getattr(Config._load_internal_config_dict, "__recbole_hdccf__", False)
    assert not getattr(Config._load_internal_config_dict.__wrapped__, "__recbole_hdccf__", False)


def test_recbole_run_recbole_runs_hdccf(small_config_dict):
    from recbole.quick_start import run_recbole

    result = run_recbole("HDCCF", "tiny", config_dict={**small_config_dict, "epochs": 1})
    assert set(result["test_result"]) == {"hit@10", "ndcg@10"}
    assert [p.name[:6] for p in checkpoints(small_config_dict["checkpoint_dir"])] == ["HDCCF-"]


def test_recbole_run_runs_hdccf(small_config_dict):
    from recbole.quick_start import run

    result = run("HDCCF", "tiny", config_dict={**small_config_dict, "epochs": 1})
    assert set(result["best_valid_result"]) == {"hit@10", "ndcg@10"}


def test_recbole_objective_function_runs_hdccf(small_config_dict):
    from recbole.quick_start import objective_function

    result = objective_function(
        {**small_config_dict, "model": "HDCCF", "dataset": "tiny", "epochs": 1, "tau": 0.2}
    )
    assert result["model"] == "HDCCF"
    assert result["valid_score_bigger"] is True
    assert result["best_valid_score"] == result["best_valid_result"]["ndcg@10"]


def test_recbole_load_data_and_model_rebuilds_hdccf(small_config_dict):
    from recbole.quick_start import load_data_and_model, run_recbole

    run_recbole("HDCCF", "tiny", config_dict={**small_config_dict, "epochs": 1, "tau": 0.2})
    (checkpoint,) = checkpoints(small_config_dict["checkpoint_dir"])
    config, model, _, _, _, _ = load_data_and_model(str(checkpoint))
    assert isinstance(model, HDCCF)
    assert config["tau"] == 0.2 and model.tau == 0.2
    saved = torch.load(checkpoint, weights_only=False)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


# ------------------------------------------------------------------ yaml defaults and precedence
def test_hdccf_yaml_defaults_load_without_listing_them(tiny_data_path):
    config = Config(model="HDCCF", dataset="tiny", config_dict={"data_path": str(tiny_data_path)})
    defaults = yaml_defaults()
    assert config["tau"] == defaults["tau"]
    for key, value in defaults.items():
        if key == "train_neg_sample_args":  # RecBole expands ~ into its 'none' settings
            assert config[key]["distribution"] == "none"
        else:
            assert config[key] == value, key
    assert config["train_batch_size"] == 256 != 2048  # the model yaml beats overall.yaml


def test_config_dict_file_and_command_line_override_the_model_yaml(tiny_data_path, tmp_path):
    base = {"data_path": str(tiny_data_path)}
    assert yaml_defaults()["tau"] not in (0.3, 0.25, 0.4)

    config = Config(model="HDCCF", dataset="tiny", config_dict={**base, "tau": 0.3})
    assert config["tau"] == 0.3

    user_file = tmp_path / "mine.yaml"
    user_file.write_text("tau: 0.4\nlambda_u: 0.5\n")
    config = Config(
        model="HDCCF", dataset="tiny", config_file_list=[str(user_file)], config_dict=base
    )
    assert (config["tau"], config["lambda_u"]) == (0.4, 0.5)

    sys.argv = ["pytest", "--tau=0.25"]  # restored by the autouse fixture
    config = Config(
        model="HDCCF",
        dataset="tiny",
        config_file_list=[str(user_file)],
        config_dict={**base, "tau": 0.3},
    )
    assert config["tau"] == 0.25  # command line > dict > files > model yaml
    assert config["lambda_u"] == 0.5


@pytest.fixture
def plugin_properties(tmp_path, monkeypatch):
    """A copy of properties/ that a test may extend, installed as the plugin's properties dir."""
    folder = tmp_path / "properties"
    shutil.copytree(REPO_ROOT / "properties", folder)
    (folder / "dataset").mkdir(exist_ok=True)
    monkeypatch.setattr(registry, "properties_dir", lambda: folder)
    return folder


def test_plugin_dataset_yaml_overrides_model_yaml(plugin_properties, tiny_data_path):
    (plugin_properties / "dataset" / "tiny.yaml").write_text("tau: 0.7\nneighbor_num: 3\n")
    base = {"data_path": str(tiny_data_path)}
    config = Config(model="HDCCF", dataset="tiny", config_dict=base)
    assert (config["tau"], config["neighbor_num"]) == (0.7, 3)
    assert config["lambda_u"] == yaml_defaults()["lambda_u"]
    assert Config(model="HDCCF", dataset="tiny", config_dict={**base, "tau": 0.3})["tau"] == 0.3
    # and for a RecBole model too (RecBole has no tiny.yaml)
    assert Config(model="BPR", dataset="tiny", config_dict=base)["neighbor_num"] == 3


def test_recbole_dataset_yaml_overrides_plugin_model_yaml(plugin_properties):
    with open(plugin_properties / "HDCCF.yaml", "a", encoding="utf-8") as handle:
        handle.write("\nload_col: {inter: [user_id, item_id]}\nfield_separator: ','\n")
    config = Config(model="HDCCF", dataset="ml-100k")
    recbole_ml100k = (
        Path(sys.modules["recbole"].__file__).parent / "properties/dataset/ml-100k.yaml"
    )
    expected = yaml.safe_load(recbole_ml100k.read_text())
    assert config["load_col"] == expected["load_col"]  # ml-100k.yaml wins over HDCCF.yaml
    assert config["field_separator"] == "\t"  # so does sample.yaml
    assert config["tau"] == yaml_defaults()["tau"]


def test_recbole_models_get_the_config_recbole_gives_them(tiny_data_path, monkeypatch):
    plain_loader = Config._load_internal_config_dict.__wrapped__
    for model, dataset, extra in (("BPR", "ml-100k", {}), ("LightGCN", "tiny", {})):
        config_dict = {"data_path": str(tiny_data_path), **extra}
        patched = Config(model=model, dataset=dataset, config_dict=config_dict)
        with monkeypatch.context() as m:
            m.setattr(Config, "_load_internal_config_dict", plain_loader)
            plain = Config(model=model, dataset=dataset, config_dict=config_dict)
        assert patched.final_config_dict == plain.final_config_dict, model


# ------------------------------------------------------------------ RecBole's models, unchanged
@pytest.mark.parametrize("model", RECBOLE_MODELS)
def test_recbole_model_runs_unchanged_through_the_plugin(model, small_config_dict, tmp_path):
    from recbole.quick_start import run_recbole as recbole_run_recbole

    from recbole_hdccf.quick_start import run_recbole

    config_dict = {**small_config_dict, "epochs": 1}
    ours = run_recbole(model, "tiny", config_dict=config_dict)
    assert ours["config"]["model"] == model
    assert Path(ours["checkpoint"]).is_file()
    assert Path(ours["checkpoint"]).parent == Path(small_config_dict["checkpoint_dir"])
    recbole = recbole_run_recbole(model, "tiny", config_dict=config_dict)
    assert ours["best_valid_result"] == recbole["best_valid_result"]
    assert ours["test_result"] == recbole["test_result"]


def test_plugin_run_recbole_resumes_from_a_checkpoint(small_config_dict, monkeypatch):
    from recbole_hdccf.quick_start import run_recbole

    first = run_recbole("BPR", "tiny", config_dict={**small_config_dict, "epochs": 1})
    epochs = []
    train_epoch = Trainer._train_epoch

    def spy(self, train_data, epoch_idx, *args, **kwargs):
        epochs.append(epoch_idx)
        return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", spy)
    resumed = run_recbole(
        "BPR", "tiny", config_dict={**small_config_dict, "epochs": 3}, resume=first["checkpoint"]
    )
    assert epochs == [1, 2]  # epoch 0 came from the checkpoint
    assert resumed["checkpoint"] == first["checkpoint"]  # RecBole keeps training into it


# ------------------------------------------------------------------ unknown names
def assert_clear_unknown_model_message(message: str, name: str):
    assert f"unknown model {name!r}" in message
    assert "HDCCF" in message
    assert "RecBole" in message and "BPR" in message


def test_unknown_model_through_config(tiny_data_path):
    with pytest.raises(UnknownModelError) as error:
        Config(model="NoSuchModel", dataset="tiny", config_dict={"data_path": str(tiny_data_path)})
    assert_clear_unknown_model_message(str(error.value), "NoSuchModel")


def test_unknown_model_through_plugin_run_recbole(small_config_dict):
    from recbole_hdccf.quick_start import run_recbole

    with pytest.raises(UnknownModelError) as error:
        run_recbole("NoSuchModel", "tiny", config_dict=small_config_dict)
    assert_clear_unknown_model_message(str(error.value), "NoSuchModel")
    assert not Path("log").exists()  # it failed before RecBole started


def test_unknown_model_through_the_cli(subprocess_env, tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_recbole_hdccf.py"), "--model=NoSuchModel"],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert_clear_unknown_model_message(out.stderr, "NoSuchModel")
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_unknown_model_through_the_hyper_cli(capsys):
    from recbole_hdccf.cli import hyper_main

    assert hyper_main(["--model=NoSuchModel"]) == 2
    assert_clear_unknown_model_message(capsys.readouterr().err, "NoSuchModel")


def test_lower_case_name_hints_at_the_right_one(tiny_data_path):
    with pytest.raises(UnknownModelError, match=r"Did you mean 'HDCCF'\?"):
        Config(model="hdccf", dataset="tiny", config_dict={"data_path": str(tiny_data_path)})
    with pytest.raises(UnknownModelError, match=r"Did you mean 'HDCCF'\?"):
        recbole_hdccf.check_model_name("Hdccf")


def test_wrong_case_recbole_name_hints_at_the_right_one(tiny_data_path):
    """RecBole finds its module for ``bpr`` but no class ``bpr``: an AttributeError without this."""
    for wrong, right in (("bpr", "BPR"), ("lightgcn", "LightGCN"), ("Neumf", "NeuMF")):
        with pytest.raises(UnknownModelError, match=rf"Did you mean {right!r}\?"):
            Config(model=wrong, dataset="tiny", config_dict={"data_path": str(tiny_data_path)})


def test_known_names_pass_the_check():
    for name in ["HDCCF", *RECBOLE_MODELS, "SASRec", "FM", "KGAT"]:
        recbole_hdccf.check_model_name(name)


# ------------------------------------------------------------------ setting names
def test_a_setting_of_another_model_is_a_clear_error():
    """RecBole would take ``NeuMF[embedding_size=128]`` and run NeuMF at 64: NeuMF's sizes are
    ``mf_embedding_size`` and ``mlp_embedding_size``."""
    with pytest.raises(UnknownSettingError) as error:
        registry.check_setting_names("NeuMF", ["learning_rate", "embedding_size"])
    message = str(error.value)
    assert "NeuMF has no setting 'embedding_size'" in message
    assert "'mf_embedding_size' or 'mlp_embedding_size'" in message
    assert "learning_rate" not in message.split("NeuMF's own settings")[0]
    assert "--config_files" in message  # the way out for a key only the user's code reads


def test_a_misspelt_setting_names_the_right_one():
    for model, wrong, right in (
        ("HDCCF", "neighbour_num", "neighbor_num"),
        ("BPR", "embeding_size", "embedding_size"),
        ("ENMF", "learning_rat", "learning_rate"),
    ):
        with pytest.raises(UnknownSettingError, match=rf"did you mean [^?]*{right!r}"):
            registry.check_setting_names(model, [wrong])


def test_own_general_and_plugin_settings_pass():
    general = ["learning_rate", "stopping_step", "eval_args", "load_col", "seed", "data_path"]
    plugin = ["train_time_budget", "fixed_eval_candidates"]
    own = {
        "HDCCF": ["neighbor_num", "ablation", "w_i_pos", "embedding_size"],
        "BPR": ["embedding_size"],
        "NeuMF": ["mf_embedding_size", "mlp_hidden_size", "dropout_prob"],
        "ENMF": ["negative_weight", "embedding_size"],
        "LightGCN": ["n_layers", "reg_weight"],
        "SimpleX": ["margin", "negative_weight", "gamma", "history_len"],
        "FM": ["embedding_size", "double_tower"],  # read by RecBole's ContextRecommender
        "SASRec": ["n_layers", "MAX_ITEM_LIST_LENGTH"],
    }
    for model, names in own.items():
        registry.check_setting_names(model, [*names, *general, *plugin])


def test_a_setting_listed_in_a_config_file_passes(tmp_path):
    with pytest.raises(UnknownSettingError):
        registry.check_setting_names("BPR", ["my_flag"])
    extra = tmp_path / "mine.yaml"
    extra.write_text("my_flag: true\n", encoding="utf-8")
    registry.check_setting_names("BPR", ["my_flag"], [extra])


def test_every_shipped_search_space_names_real_settings():
    from recbole.trainer import HyperTuning

    for space in sorted((REPO_ROOT / "properties" / "hyper").glob("*.hyper")):
        tuner = HyperTuning(lambda *_: None, algo="random", params_file=str(space), max_evals=1)
        registry.check_setting_names(space.stem, list(tuner.space))


def test_the_entry_points_refuse_an_unknown_setting_before_running(tmp_path, capsys):
    from recbole_hdccf import benchmark
    from recbole_hdccf.cli import hyper_main, run_main

    out = tmp_path / "bench"
    code = benchmark.main(
        ["--dataset=tiny", "--models=BPR,NeuMF[embedding_size=128]", f"--out={out}"]
    )
    assert code == 2
    assert "NeuMF[embedding_size=128]" in capsys.readouterr().err
    assert not out.exists()  # nothing ran, nothing written
    assert benchmark.main(["--dataset=tiny", "--set", "train_time_budjet=60", f"--out={out}"]) == 2
    err = capsys.readouterr().err
    assert "--set, for HDCCF" in err and "'train_time_budget'" in err  # the source it came from
    # a --set key that one of the models lacks names that model, not a label
    code = benchmark.main(
        ["--dataset=tiny", "--models=HDCCF,BPR", "--set", "tau=0.5", f"--out={out}"]
    )
    assert code == 2
    assert "--set, for BPR" in capsys.readouterr().err

    assert run_main(["--model=BPR", "--dataset=tiny", "--embeding_size=8"]) == 2
    assert "'embedding_size'" in capsys.readouterr().err

    space = tmp_path / "BPR.hyper"
    space.write_text("learning_rate choice [0.01]\nembeding_size choice [8]\n", encoding="utf-8")
    assert hyper_main(["--model=BPR", "--dataset=tiny", f"--params_file={space}"]) == 2
    err = capsys.readouterr().err
    assert str(space) in err and "'embedding_size'" in err
