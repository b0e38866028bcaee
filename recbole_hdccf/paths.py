"""Where the plugin's RecBole yaml lives, installed or in a source checkout."""

from __future__ import annotations

from pathlib import Path


def properties_dir() -> Path:
    """``properties/`` of the repository, or ``recbole_hdccf/properties`` once pip-installed."""
    try:
        import recbole_hdccf.properties as installed

        return Path(installed.__file__).resolve().parent
    except ImportError:  # running from a source checkout without installing
        return Path(__file__).resolve().parent.parent / "properties"


def source_checkout() -> Path | None:
    """The repository folder when the plugin runs from a source checkout (``setup.py`` beside
    the package), None for an installed copy."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "setup.py").is_file() else None


def protocol_file(name: str) -> Path:
    """A protocol's yaml: a preset name (``paper``, ``paper-random``, ``full``,
    ``recbole-benchmark``) -> ``properties/protocol/<name>.yaml``; a path ending in ``.yaml`` or
    ``.yml`` -> that file, absolute (runs may start in another folder)."""
    given = Path(name)
    if given.suffix in (".yaml", ".yml"):
        if not given.is_file():
            raise ValueError(f"protocol file {name!r} does not exist; give a yaml file or a preset")
        return given.resolve()
    path = properties_dir() / "protocol" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (properties_dir() / "protocol").glob("*.yaml"))
        raise ValueError(
            f"unknown protocol preset {name!r}; choose one of {known}, or give a yaml file's path"
        )
    return path


def model_files(model: str) -> list[str]:
    """The plugin's settings for a RecBole baseline, ``[properties/model/<model>.yaml]``, or ``[]``
    where it has none (HDCCF reads ``properties/HDCCF.yaml`` by itself)."""
    path = properties_dir() / "model" / f"{model}.yaml"
    return [str(path)] if path.is_file() else []
