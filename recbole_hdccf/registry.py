"""The plugin's model registry: makes plugin model names resolve wherever RecBole resolves names.

RecBole 1.2.1 resolves a model name in three places, all by name lookups that a plugin can join
without editing RecBole:

- ``recbole.utils.get_model`` probes ``recbole.model.<kind>.<name.lower()>`` with
  ``importlib.util.find_spec``, which honours ``sys.modules``: each plugin model module is
  registered there under ``recbole.model.general_recommender.<name.lower()>``.
- ``recbole.utils.get_trainer`` looks for ``recbole.trainer.<Name>Trainer``: the plugin's trainer
  is set as that attribute.
- ``Config`` reads model defaults only from RecBole's own ``properties/model/<Name>.yaml``: its
  loader is wrapped to add the plugin's ``properties/<Name>.yaml`` at the same place in the
  precedence order (overall < model < dataset < user files < dict < command line), and the plugin's
  ``properties/dataset/<name>.yaml`` where RecBole has none.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from recbole_hdccf.paths import properties_dir


@dataclass(frozen=True)
class PluginModel:
    name: str
    module: str  # module that defines the model class ``name``
    trainer: str | None  # "module:Class" of its trainer, or None for RecBole's default

    @property
    def yaml(self) -> Path:
        return properties_dir() / f"{self.name}.yaml"


PLUGIN_MODELS: dict[str, PluginModel] = {
    "HDCCF": PluginModel("HDCCF", "recbole_hdccf.hdccf", "recbole_hdccf.trainer:HDCCFTrainer"),
}

_RECBOLE_KINDS = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


def _recbole_model_classes(name: str) -> list[str]:
    """Classes defined in RecBole's module for ``name`` (``<kind>/<name.lower()>.py``), read from
    the source, so no optional dependency fires."""
    import recbole.model

    root = Path(recbole.model.__file__).parent
    classes = []
    for kind in _RECBOLE_KINDS:
        path = root / kind / f"{name.lower()}.py"
        if path.is_file():
            classes += re.findall(r"^class (\w+)\(", path.read_text(encoding="utf-8"), flags=re.M)
    return classes


def recbole_model_exists(name: str) -> bool:
    """Whether RecBole itself ships a model ``name``, spelled exactly (``get_model`` looks the
    class up by that name: ``bpr`` finds RecBole's module but no class)."""
    return name in _recbole_model_classes(name)


class UnknownModelError(ValueError):
    pass


def check_model_name(name) -> None:
    """Raise a clear error for a model name that neither the plugin nor RecBole knows."""
    if not isinstance(name, str) or name in PLUGIN_MODELS or recbole_model_exists(name):
        return
    close = [m for m in PLUGIN_MODELS if m.lower() == name.lower()]
    close += [c for c in _recbole_model_classes(name) if c.lower() == name.lower()]
    hint = f" Did you mean {close[0]!r}? Names are case-sensitive." if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} recbole-hdccf provides: {', '.join(sorted(PLUGIN_MODELS))}; "
        "every RecBole 1.2.1 model (BPR, NeuMF, ENMF, LightGCN, SimpleX, ...) is available too "
        "under its RecBole name (see https://recbole.io/model_list.html)."
    )


def _register_model(plugin: PluginModel) -> None:
    module = importlib.import_module(plugin.module)
    alias = f"recbole.model.general_recommender.{plugin.name.lower()}"
    sys.modules[alias] = module
    parent = importlib.import_module("recbole.model.general_recommender")
    setattr(parent, plugin.name.lower(), module)
    if plugin.trainer:
        trainer_module, trainer_class = plugin.trainer.split(":")
        trainer = getattr(importlib.import_module(trainer_module), trainer_class)
        setattr(importlib.import_module("recbole.trainer"), f"{plugin.name}Trainer", trainer)


def _install_config_hooks() -> None:
    import recbole.config.configurator as configurator
    from recbole.config import Config

    if getattr(Config._load_internal_config_dict, "__recbole_hdccf__", False):
        return
    original_load = Config._load_internal_config_dict

    @functools.wraps(original_load)
    def _load_internal_config_dict(self, model, model_class, dataset):
        original_load(self, model, model_class, dataset)
        plugin = PLUGIN_MODELS.get(model)
        recbole_props = Path(configurator.__file__).resolve().parent.parent / "properties"
        recbole_dataset_yaml = recbole_props / "dataset" / f"{dataset}.yaml"
        plugin_dataset_yaml = properties_dir() / "dataset" / f"{dataset}.yaml"
        if plugin is None and (recbole_dataset_yaml.is_file() or not plugin_dataset_yaml.is_file()):
            return
        # Re-layer so the plugin's files take RecBole's precedence slots: model, then dataset.
        if plugin is not None:
            self._update_internal_config_dict(plugin.yaml)
        for layer in (recbole_props / "dataset" / "sample.yaml", recbole_dataset_yaml):
            if layer.is_file():
                self._update_internal_config_dict(layer)
        if not recbole_dataset_yaml.is_file() and plugin_dataset_yaml.is_file():
            added = self._update_internal_config_dict(plugin_dataset_yaml) or {}
            self.parameters["Dataset"] += [k for k in added if k not in self.parameters["Dataset"]]

    _load_internal_config_dict.__recbole_hdccf__ = True
    Config._load_internal_config_dict = _load_internal_config_dict

    original_get_model = configurator.get_model

    @functools.wraps(original_get_model)
    def get_model(model_name):
        check_model_name(model_name)
        return original_get_model(model_name)

    configurator.get_model = get_model


def register_all() -> None:
    """Make every plugin model resolvable by name in RecBole (idempotent)."""
    for plugin in PLUGIN_MODELS.values():
        _register_model(plugin)
    _install_config_hooks()
