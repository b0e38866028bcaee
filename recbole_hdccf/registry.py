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

import difflib
import functools
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from recbole_hdccf.candidates import CONFIG_KEY as CANDIDATES_KEY
from recbole_hdccf.paths import model_files, properties_dir


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


def _recbole_model_sources(name: str) -> list[tuple[str, Path]]:
    """``(kind, path)`` of RecBole's module for ``name`` (``<kind>/<name.lower()>.py``)."""
    root = _recbole_root() / "model"
    paths = [(kind, root / kind / f"{name.lower()}.py") for kind in _RECBOLE_KINDS]
    return [(kind, path) for kind, path in paths if path.is_file()]


def _recbole_model_classes(name: str) -> list[str]:
    """Classes defined in RecBole's module for ``name``, read from the source, so no optional
    dependency fires."""
    classes = []
    for _, path in _recbole_model_sources(name):
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


class UnknownSettingError(ValueError):
    pass


# Read by the plugin (quick_start.py, candidates.py), listed in no yaml of RecBole's.
PLUGIN_SETTINGS = frozenset({"train_time_budget", CANDIDATES_KEY})
# Read for every context-aware model by RecBole's ``ContextRecommender.__init__``.
CONTEXT_SETTINGS = ("double_tower", "embedding_size", "numerical_features")
_CONFIG_READ = re.compile(r"""config(?:\[|\.get\()\s*["']([A-Za-z_]\w*)["']""")


def _yaml_keys(paths) -> set[str]:
    """Top-level keys of yaml files (read as text: a key is a line ``name:`` at column 0)."""
    keys = set()
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        keys.update(re.findall(r"^([A-Za-z_]\w*)\s*:", text, flags=re.M))
    return keys


def _recbole_root() -> Path:
    import recbole

    return Path(recbole.__file__).resolve().parent


@functools.cache
def _general_settings() -> frozenset[str]:
    """Settings of every model: RecBole's overall, dataset and quick-start yaml, the keys its
    code (not its models) reads, and the plugin's protocol and dataset presets."""
    root = _recbole_root()
    keys = _yaml_keys(
        [
            *(root / "properties").glob("*.yaml"),
            *(root / "properties" / "dataset").glob("*.yaml"),
            *(root / "properties" / "quick_start_config").glob("*.yaml"),
            *(properties_dir() / "protocol").glob("*.yaml"),
            *(properties_dir() / "dataset").glob("*.yaml"),
        ]
    )
    for source in root.rglob("*.py"):
        if source.relative_to(root).parts[0] != "model":
            keys.update(_CONFIG_READ.findall(source.read_text(encoding="utf-8")))
    return frozenset(keys | PLUGIN_SETTINGS)


def model_settings(name: str) -> dict[str, list[str]]:
    """``{file: its settings}`` of model ``name``'s own: its yaml (RecBole's, the plugin's) and,
    for a RecBole model, the keys its module reads that no yaml lists."""
    sources: dict[str, list[str]] = {}
    plugin = PLUGIN_MODELS.get(name)
    yamls = [_recbole_root() / "properties" / "model" / f"{name}.yaml"]
    yamls += [plugin.yaml] if plugin else [Path(file) for file in model_files(name)]
    for path in yamls:
        if path.is_file():
            sources[str(path)] = sorted(_yaml_keys([path]))
    for kind, path in _recbole_model_sources(name):
        keys = set(_CONFIG_READ.findall(path.read_text(encoding="utf-8")))
        if kind == "context_aware_recommender":
            keys.update(CONTEXT_SETTINGS)
        sources[str(path)] = sorted(keys)
    return sources


def check_setting_names(model: str, names, config_files=()) -> None:
    """Raise a clear error for settings that no run of ``model`` reads: RecBole takes any key
    and ignores the ones nothing reads, so a misspelt or wrong-model setting (``NeuMF`` has
    ``mf_embedding_size``, not ``embedding_size``) would silently change nothing.

    Known: RecBole's general settings, the plugin's, ``model``'s own and every key of
    ``config_files`` (where a setting that only your own code reads can be listed)."""
    own = model_settings(model)
    own_keys = {key for keys in own.values() for key in keys}
    known = own_keys | _general_settings() | _yaml_keys(config_files)
    unknown = [name for name in dict.fromkeys(names) if name not in known]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = [k for k in sorted(own_keys) if name in k or k in name]
        close += difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.75)
        if close:
            hints.append(
                f"For {name!r}, did you mean {' or '.join(map(repr, dict.fromkeys(close)))}?"
            )
    raise UnknownSettingError(
        f"{model} has no setting {', '.join(map(repr, unknown))}: RecBole would ignore it and run "
        f"without it. {' '.join(hints)} {model}'s own settings: {', '.join(sorted(own_keys))} "
        f"({', '.join(own) or 'no yaml'}); the general ones are in RecBole's "
        "properties/overall.yaml. A setting only your own code reads: list it in a yaml given "
        "with --config_files."
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
        recbole_props = _recbole_root() / "properties"
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
