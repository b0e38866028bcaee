"""The command-line entry points (run_recbole_hdccf.py, run_hyper_hdccf.py) as users run them, and
the package layout a wheel installs.

Every script runs as a child process (``sys.executable``, absolute script path, cwd = a tmp
folder) on the tiny dataset; the README's ml-100k command is marked slow.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT, config_yaml, small_config

import recbole_hdccf  # noqa: F401  (the shims apply before RecBole's functions are imported)

RUN_SCRIPT = REPO_ROOT / "run_recbole_hdccf.py"
HYPER_SCRIPT = REPO_ROOT / "run_hyper_hdccf.py"


def run_script(script, args, cwd, env, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def printed(stdout: str, label: str):
    """The value after ``label: `` on the line the CLI printed (a dict literal or a path)."""
    match = re.search(rf"^{re.escape(label)}: (.*)$", stdout, flags=re.M)
    assert match, f"no {label!r} line in:\n{stdout[-3000:]}"
    return match.group(1).strip()


def small_config_file(folder: Path, data_path: Path, **overrides) -> Path:
    """The small tiny-dataset config as a yaml file for ``--config_files``."""
    path = folder / "small.yaml"
    config = small_config(data_path, folder / "saved", **overrides)
    path.write_text(config_yaml(config), encoding="utf-8")
    return path


# ------------------------------------------------------------------ run_recbole_hdccf.py
@pytest.fixture(scope="module")
def hdccf_cli_run(tmp_path_factory, tiny_data_path, subprocess_env):
    """One HDCCF run through the CLI, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("cli_run")
    checkpoint_dir = cwd / "checkpoints"
    args = [
        "--model=HDCCF",
        "--dataset=tiny",
        f"--data_path={tiny_data_path}",
        "--epochs=1",
        f"--config_files={small_config_file(cwd, tiny_data_path)}",
        f"--checkpoint_dir={checkpoint_dir}",
        "--tau=0.2",
    ]
    out = run_script(RUN_SCRIPT, args, cwd, subprocess_env)
    return {"out": out, "cwd": cwd, "checkpoint_dir": checkpoint_dir}


def test_run_prints_results_and_checkpoint(hdccf_cli_run):
    out = hdccf_cli_run["out"]
    assert out.returncode == 0, out.stderr[-3000:]
    valid = ast.literal_eval(printed(out.stdout, "best valid"))
    test = ast.literal_eval(printed(out.stdout, "test result"))
    assert set(valid) == set(test) == {"hit@10", "ndcg@10"}
    assert all(0 <= v <= 1 for v in [*valid.values(), *test.values()])
    checkpoint = Path(printed(out.stdout, "checkpoint"))
    assert checkpoint.is_file()
    assert checkpoint.parent == hdccf_cli_run["checkpoint_dir"]  # --checkpoint_dir was honoured
    assert checkpoint.name.startswith("HDCCF-") and checkpoint.suffix == ".pth"
    # RecBole's outputs went into the working directory, nowhere else
    assert (hdccf_cli_run["cwd"] / "log" / "HDCCF").is_dir()


def test_key_value_overrides_reach_the_config(hdccf_cli_run):
    assert hdccf_cli_run["out"].returncode == 0, hdccf_cli_run["out"].stderr[-3000:]
    (log,) = (hdccf_cli_run["cwd"] / "log" / "HDCCF").glob("*.log")
    text = log.read_text(encoding="utf-8")
    assert re.search(r"^tau = 0\.2$", text, flags=re.M), "--tau=0.2 (default 1.0) not logged"
    assert re.search(r"^epochs = 1$", text, flags=re.M)
    assert re.search(r"^embedding_size = 16$", text, flags=re.M)  # from --config_files


def test_checkpoint_reproduces_the_printed_test_numbers(hdccf_cli_run):
    from recbole.quick_start import load_data_and_model
    from recbole.utils import get_trainer

    from recbole_hdccf.hdccf import HDCCF

    out = hdccf_cli_run["out"]
    assert out.returncode == 0, out.stderr[-3000:]
    checkpoint = printed(out.stdout, "checkpoint")
    config, model, _, _, _, test_data = load_data_and_model(checkpoint)
    assert isinstance(model, HDCCF)
    assert config["tau"] == 0.2 and model.tau == 0.2
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    result = trainer.evaluate(test_data, load_best_model=False)
    assert dict(result) == ast.literal_eval(printed(out.stdout, "test result"))


def test_missing_dataset_fails_fast_and_clearly(tmp_path, subprocess_env):
    data_path = tmp_path / "data"
    data_path.mkdir()
    started = time.monotonic()
    out = run_script(
        RUN_SCRIPT,
        ["--model=HDCCF", "--dataset=nope", f"--data_path={data_path}", "--epochs=1"],
        tmp_path,
        subprocess_env,
        timeout=120,
    )
    assert time.monotonic() - started < 120
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "error: " in out.stderr
    assert str(data_path / "nope") in out.stderr
    assert "#2218" in out.stderr and "recbole_hdccf.prepare" in out.stderr
    assert "test result" not in out.stdout


# ------------------------------------------------------------------ run_hyper_hdccf.py
def read_hyper_results(path: Path) -> dict[str, str]:
    """RecBole's result file: blocks ``params\\nValid result:\\n...\\nTest result:\\n...``."""
    blocks = [b for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    results = {}
    for block in blocks:
        params, rest = block.strip().split("\n", 1)
        assert "Valid result:" in rest and "Test result:" in rest, block
        assert "ndcg@10" in rest, block
        results[params.strip()] = rest
    return results


HYPER_CASES = {
    # id: (model, search space, extra args, expected parameter lines or a count)
    "HDCCF-exhaustive": ("HDCCF", "tau choice [0.1,0.2]\n", [], {"tau:0.1", "tau:0.2"}),
    "HDCCF-random": ("HDCCF", "tau uniform 0.05,0.3\n", ["--algo=random", "--max_evals=2"], 2),
    # a finite grid drawn at random: without repeats, so no more trials than the grid holds
    "BPR-random-grid": (
        "BPR",
        "learning_rate choice [0.01,0.005]\n",
        ["--algo=random", "--max_evals=5"],
        {"learning_rate:0.01", "learning_rate:0.005"},
    ),
    "BPR-exhaustive": (
        "BPR",
        "learning_rate choice [0.01,0.005]\n",
        [],
        {"learning_rate:0.01", "learning_rate:0.005"},
    ),
}


@pytest.mark.parametrize("case", list(HYPER_CASES))
def test_hyper_writes_every_trial(case, tmp_path, tiny_data_path, subprocess_env):
    model, space, extra, expected = HYPER_CASES[case]
    params_file = tmp_path / "small.hyper"
    params_file.write_text(space, encoding="utf-8")
    args = [
        f"--model={model}",
        "--dataset=tiny",
        f"--data_path={tiny_data_path}",
        "--epochs=1",
        f"--config_files={small_config_file(tmp_path, tiny_data_path)}",
        f"--params_file={params_file}",
        *extra,
    ]
    if not extra:
        args.append("--algo=exhaustive")
    out = run_script(HYPER_SCRIPT, args, tmp_path, subprocess_env)
    assert out.returncode == 0, out.stderr[-3000:]
    result_file = tmp_path / "hyper_result.result"  # RecBole's default name, in the cwd
    assert result_file.is_file(), out.stdout[-2000:]
    results = read_hyper_results(result_file)
    params = {line.replace(" ", "").rstrip(",") for line in results}
    if isinstance(expected, int):
        assert len(params) == expected, results
        values = [float(p.split(":")[1]) for p in params]
        assert all(0.05 <= v <= 0.3 for v in values), values
    else:
        assert params == expected, results
    assert "best params" in out.stdout
    # the JSON record beside it: the same trials, with their settings as values
    search = json.loads((tmp_path / "hyper_result.json").read_text(encoding="utf-8"))
    assert search["model"] == model and len(search["trials"]) == len(results)
    assert (
        search["space"] == space.splitlines()
        and f"--params_file={params_file}" in search["arguments"]
    )
    for trial in search["trials"]:
        drawn = ",".join(f"{key}:{value}" for key, value in trial["params"].items())
        assert drawn in params
        assert trial["test_result"]["ndcg@10"] == pytest.approx(
            float(results[drawn].split("ndcg@10 : ")[-1].split()[0]), abs=1e-4
        )
        assert trial["seconds"] > 0
    best = [p for p in (tmp_path / "saved").glob(f"{model}-*.pth") if not p.stem.endswith("-last")]
    assert len(best) == len(results)  # one best checkpoint per trial, none overwritten


@pytest.mark.parametrize("space", sorted((REPO_ROOT / "properties" / "hyper").glob("*.hyper")))
def test_shipped_search_spaces_parse_and_name_real_settings(space):
    from recbole.config import Config
    from recbole.trainer.hyper_tuning import HyperTuning

    parsed = HyperTuning._build_space_from_file(str(space))
    assert parsed, space
    model = space.stem
    yaml = REPO_ROOT / "properties" / "model" / f"{model}.yaml"
    config = Config(
        model=model, dataset="ml-100k", config_file_list=[str(yaml)] if yaml.is_file() else None
    )
    unknown = [key for key in parsed if key not in config.final_config_dict]
    assert not unknown, f"{space.name}: no such setting for {model}: {unknown}"


def test_hyper_trial_with_a_bad_setting_fails_clearly(tmp_path, tiny_data_path, subprocess_env):
    params_file = tmp_path / "bad.hyper"
    params_file.write_text("tau choice [-1.0]\n", encoding="utf-8")
    args = [
        "--model=HDCCF",
        "--dataset=tiny",
        f"--config_files={small_config_file(tmp_path, tiny_data_path)}",
        f"--params_file={params_file}",
    ]
    out = run_script(HYPER_SCRIPT, args, tmp_path, subprocess_env)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "tau=-1.0: the temperature must be > 0" in out.stderr and "Traceback" not in out.stderr
    assert f"the search space {params_file}" in out.stderr and "no trial was run" in out.stderr
    assert not (tmp_path / "hyper_result.json").exists()  # refused before the first trial


REFUSED_SPACES = {
    # id: (space, the setting the error names); each space's first trial would be accepted
    "a pair of choices": (
        "ui_negatives choice ['both','items']\nw_u_pos choice [0.1]\n",
        "w_u_pos=0.1: has no effect with ui_negatives='items'",
    ),
    "a range's lower end": ("tau uniform -0.5,1.0\n", "tau=-0.5: the temperature must be > 0"),
    "the command line against a choice": (
        "debias choice [True,False]\n",
        "w_i_pos=0.1: has no effect with debias=False",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_SPACES))
def test_hyper_refuses_a_space_that_can_draw_a_refused_setting_before_any_trial(
    case, tmp_path, tiny_data_path, monkeypatch, capsys
):
    """A search stops at the first trial HDCCF refuses: a space that draws such a setting only
    at its tenth trial would waste nine. Every corner of the space is checked first."""
    from recbole_hdccf.cli import hyper_main

    space, named = REFUSED_SPACES[case]
    params_file = tmp_path / "refused.hyper"
    params_file.write_text(space, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    command_line = ["--w_i_pos=0.1"] if "command line" in case else []
    monkeypatch.setattr(sys, "argv", ["run_hyper_hdccf.py", *command_line])  # Config reads it
    args = [
        "--model=HDCCF",
        "--dataset=tiny",
        f"--config_files={small_config_file(tmp_path, tiny_data_path)}",
        f"--params_file={params_file}",
        *command_line,
    ]
    assert hyper_main(args) == 2
    err = capsys.readouterr().err
    assert named in err and "no trial was run" in err, err
    assert not (tmp_path / "hyper_result.json").exists()
    assert not (tmp_path / "saved").exists()


def test_hyper_without_search_space_fails_clearly(tmp_path, capsys):
    from recbole_hdccf.cli import hyper_main

    missing = tmp_path / "missing.hyper"
    assert hyper_main(["--model=HDCCF", "--dataset=tiny", f"--params_file={missing}"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "hyper_result.result").exists()


# ------------------------------------------------------------------ packaging
def _source_copy(destination: Path) -> Path:
    """The repository without VCS data, build outputs, user data or tests."""
    skip_at_root = {".git", "build", "dist", "dataset", "tests", "log", "log_tensorboard", "saved"}

    def ignore(folder, names):
        at_root = Path(folder).resolve() == REPO_ROOT
        return [
            n
            for n in names
            if (at_root and n in skip_at_root)
            or n.endswith(".egg-info")
            or n in {"__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
        ]

    shutil.copytree(REPO_ROOT, destination, ignore=ignore)
    return destination


def _shipped_properties() -> set[str]:
    root = REPO_ROOT / "properties"
    return {
        f"recbole_hdccf/properties/{p.relative_to(root).as_posix()}"
        for p in root.rglob("*")
        if p.suffix in {".yaml", ".hyper"}
    }


def test_wheel_ships_the_properties(tmp_path, subprocess_env):
    source = _source_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(wheels),
            str(source),
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("recbole_hdccf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "recbole_hdccf/properties/HDCCF.yaml" in names
    assert "recbole_hdccf/properties/hyper/HDCCF.hyper" in names
    assert "recbole_hdccf/properties/__init__.py" in names
    missing = _shipped_properties() - names
    assert not missing, f"files under properties/ that the wheel leaves out: {sorted(missing)}"

    # Installed (unpacked), the package finds its yaml inside itself, not in a checkout.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**subprocess_env, "PYTHONPATH": str(site)}
    code = (
        "import recbole_hdccf, recbole_hdccf.paths as p; "
        "print(recbole_hdccf.__file__); print(p.properties_dir())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    module_file, properties = out.stdout.strip().splitlines()[-2:]
    assert Path(module_file).is_relative_to(site)
    assert Path(properties) == site / "recbole_hdccf" / "properties"


@pytest.mark.slow
def test_non_editable_pip_install(tmp_path, subprocess_env):
    """``pip install .`` (not editable) into its own folder: the installed package reads its
    yaml from inside itself, and the source tree is not needed any more."""
    source = _source_copy(tmp_path / "src")
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--target",
            str(target),
            str(source),
        ],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(source)  # nothing may still point into the source tree
    code = (
        "import recbole_hdccf\n"
        "from recbole_hdccf.paths import properties_dir\n"
        "from recbole.config import Config\n"
        "c = Config(model='HDCCF', dataset='ml-100k')\n"
        "print(recbole_hdccf.__file__)\n"
        "print(properties_dir())\n"
        "print(c['tau'], c['neighbor_num'], c['train_batch_size'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**subprocess_env, "PYTHONPATH": str(target)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    module_file, properties, values = out.stdout.strip().splitlines()[-3:]
    assert Path(module_file).is_relative_to(target)
    assert Path(properties) == target / "recbole_hdccf" / "properties"
    assert (Path(properties) / "HDCCF.yaml").is_file()
    assert (Path(properties) / "hyper" / "HDCCF.hyper").is_file()
    import yaml

    defaults = yaml.safe_load((REPO_ROOT / "properties" / "HDCCF.yaml").read_text())
    expected = [defaults["tau"], defaults["neighbor_num"], defaults["train_batch_size"]]
    assert values.split() == [str(v) for v in expected]


# ------------------------------------------------------------------ the README's main command
@pytest.mark.slow
def test_readme_main_command_on_ml_100k(tmp_path, subprocess_env):
    """``python run_recbole_hdccf.py --model=HDCCF --dataset=ml-100k --epochs=1`` (minutes)."""
    env = {k: v for k, v in subprocess_env.items() if k != "OMP_NUM_THREADS"}  # as users run it
    out = run_script(
        RUN_SCRIPT,
        ["--model=HDCCF", "--dataset=ml-100k", "--epochs=1"],
        tmp_path,
        env,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    test = ast.literal_eval(printed(out.stdout, "test result"))
    assert test and all(0 <= v <= 1 for v in test.values())
    checkpoint = tmp_path / printed(out.stdout, "checkpoint")  # RecBole's default: ./saved
    assert checkpoint.is_file() and checkpoint.resolve().is_relative_to(tmp_path.resolve())
    assert (tmp_path / "log" / "HDCCF").is_dir()


# ------------------------------------------------------------------ dataset/README.md
def test_dataset_readme_example_is_a_valid_atomic_file(tmp_path):
    """The README's 3-line .inter example loads in RecBole as written (tabs, header types)."""
    from recbole.config import Config
    from recbole.data import create_dataset

    readme = (REPO_ROOT / "dataset" / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```\n(.*?)```", readme, flags=re.S)
    (example,) = [b for b in blocks if b.startswith("user_id:token")]
    assert len(example.strip().splitlines()) == 3
    (tmp_path / "data" / "example").mkdir(parents=True)
    (tmp_path / "data" / "example" / "example.inter").write_text(example, encoding="utf-8")
    config = Config(
        model="BPR",
        dataset="example",
        config_dict={
            "data_path": str(tmp_path / "data"),
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        },
    )
    dataset = create_dataset(config)
    assert (dataset.user_num, dataset.item_num, dataset.inter_num) == (2, 3, 2)
    assert "timestamp" in dataset.inter_feat


def test_gitignore_keeps_data_out_but_the_readme_in():
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs git and a checkout")

    def ignored(path: str) -> bool:
        out = subprocess.run(
            [git, "check-ignore", "-q", path], cwd=REPO_ROOT, capture_output=True, timeout=30
        )
        return out.returncode == 0

    assert ignored("dataset/ml-1m/ml-1m.inter")
    assert ignored("dataset/ml-100k.zip")
    assert not ignored("dataset/README.md")
