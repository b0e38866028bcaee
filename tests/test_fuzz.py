"""Fuzzing (hypothesis) of the two places that read user input: HDCCF's settings and the raw
data converter. Bounded ``max_examples`` keep the file under a minute.

- Settings: any values, of any type, for any HDCCF key give a valid settings object or a
  ``ConfigError`` that names one of the keys given; never another exception.
- ``recbole_hdccf.prepare``: arbitrary lines and bytes in the ml-1m ``::`` format and in a generic
  CSV give a result or a ``PrepareError`` naming the file (and, for a bad line, its number);
  never another exception, and a failure leaves nothing in the output folder.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recbole_hdccf.prepare import GenericOptions, PrepareError, prepare
from recbole_hdccf.settings import ConfigError, HDCCFSettings

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEYS = [f.name for f in HDCCFSettings.__dataclass_fields__.values()]
DEFAULTS = {key: HDCCFSettings.__dataclass_fields__[key].default for key in KEYS}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["item", "any", "none", "contrastive", "bpr", "", "None"]),
    st.sampled_from(["wo_u", "wo_i", "wo_ui", "bpr_plus", "biased", "unmodulated"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)
# Mostly plausible values, so that valid settings and contradictions are reached too.
plausible = {
    "embedding_size": st.integers(-2, 70),
    "tau": st.floats(-1, 2),
    "neighbor_num": st.integers(-1, 7),
    "lambda_u": st.sampled_from([0, 0.0, 0.1, 0.5, -0.1]),
    "lambda_i": st.sampled_from([0, 0.0, 0.1, 0.5, -0.1]),
    "w_u_pos": st.floats(-0.5, 1.5),
    "w_i_pos": st.floats(-0.5, 1.5),
    "train_batch_size": st.integers(-1, 300),
    "modulation_hidden": st.lists(st.integers(-1, 64), max_size=2),
    "full_sort_memory_mb": st.integers(-1, 1024),
}
config_values = {
    key: st.one_of(values, plausible.get(key, st.booleans()), st.just(DEFAULTS[key]))
    for key in KEYS
}


def _is_given(key, value) -> bool:
    """Whether ``value`` can be blamed: it is not the default (None means the default)."""
    if value is None:
        return False
    if type(value) is not type(DEFAULTS[key]):  # 2.0 for the integer 2 can be blamed
        return True
    try:
        return bool(value != DEFAULTS[key])
    except Exception:  # noqa: BLE001  (exotic comparisons: count it as given)
        return True


def _check_settings(config: dict, world_size=None):
    try:
        result = HDCCFSettings.from_config(config, world_size=world_size)
    except ConfigError as error:  # any other exception fails the test
        blamed = [k for k in config if _is_given(k, config[k])]
        named = [k for k in KEYS if re.search(rf"\b{k}\b", str(error))]
        assert set(named) & set(blamed), (str(error), config)
        return None
    assert isinstance(result, HDCCFSettings)
    result.validate(world_size=world_size or 1)  # the resolved settings are valid as well
    return result


@FUZZ
@given(st.fixed_dictionaries({}, optional=config_values))
def test_settings_fuzz(config):
    _check_settings(config)


@FUZZ
@given(st.sampled_from(KEYS), values)
def test_one_malformed_key(key, value):
    _check_settings({key: value})


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(-3, 40),
    st.booleans(),
)
def test_batch_per_process(world_size, batch_size, gather):
    result = _check_settings(
        {"train_batch_size": batch_size, "gather_negatives": gather}, world_size=world_size
    )
    needed = 2 if gather else max(2, 2 * world_size)
    assert (result is not None) == (batch_size >= needed)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.fixed_dictionaries({}, optional={k: config_values[k] for k in KEYS[:8]}))
def test_settings_fuzz_through_recbole_config(small_config_dict, config):
    """The same through RecBole's ``Config`` and the check ``run_recbole`` makes first."""
    from recbole.config import Config

    from recbole_hdccf.quick_start import validate_config

    clean = {k: v for k, v in config.items() if v is not None}
    try:
        recbole_config = Config(
            model="HDCCF", dataset="tiny", config_dict={**small_config_dict, **clean}
        )
    except Exception:  # noqa: BLE001  (RecBole's own parsing is not under test)
        return
    try:
        validate_config(recbole_config)
    except ConfigError as error:
        assert any(re.search(rf"\b{k}\b", str(error)) for k in clean), (str(error), clean)


# ------------------------------------------------------------------ raw data
_counter = itertools.count()


def _fresh(root: Path) -> Path:
    folder = root / f"case{next(_counter)}"
    folder.mkdir()
    return folder


def _quiet(_: str) -> None:
    pass


def _run_prepare(raw: Path, out: Path, dataset: str, **kwargs):
    """``prepare``; on failure: a PrepareError naming the file, nothing left in ``out``."""
    try:
        result = prepare(dataset, raw, out, log=_quiet, **kwargs)
    except PrepareError as error:
        message = str(error)
        assert raw.name in message or str(raw) in message, message
        assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
        return None, message
    inter = result.folder / f"{result.name}.inter"
    with open(inter, encoding="utf-8", newline="") as handle:  # cells may be quoted (pandas)
        records = list(csv.reader(handle, delimiter="\t"))
    assert len(records) == result.n_interactions + 1 > 1
    assert {len(record) for record in records} == {len(records[0])}
    assert (result.folder / "MANIFEST.sha256").is_file()
    assert sorted(p.name for p in out.iterdir()) == [result.name]  # no temporary folder left
    return result, None


def _line_number(message: str) -> int | None:
    found = re.search(r", line (\d+):", message)
    return int(found.group(1)) if found else None


ids = st.one_of(st.integers(0, 50).map(str), st.text(max_size=4))
numbers = st.one_of(
    st.integers(-5, 2_000_000_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=4),
)
ml_good_line = st.builds(lambda u, i, r, t: f"{u}::{i}::{r}::{t}", ids, ids, numbers, numbers)
ml_line = st.one_of(
    ml_good_line,
    ml_good_line,
    st.text(max_size=30),
    st.lists(st.text(max_size=5), min_size=1, max_size=6).map("::".join),
)
line_ends = st.sampled_from(["\n", "\r\n"])


@FUZZ
@given(
    st.lists(st.tuples(ml_line, line_ends), max_size=12),
    st.sampled_from(["latin-1", "utf-8"]),
    st.binary(max_size=20),
)
def test_ml1m_lines_fuzz(tmp_path, lines, encoding, tail):
    case = _fresh(tmp_path)
    raw = case / "raw"
    raw.mkdir()
    data = "".join(text + end for text, end in lines).encode(encoding, errors="replace") + tail
    (raw / "ratings.dat").write_bytes(data)
    result, message = _run_prepare(raw, case / "out", "ml-1m")
    if message is not None:
        assert "ratings.dat" in message
        line = _line_number(message)
        assert line is None or 1 <= line <= data.count(b"\n") + 1


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["ratings.dat", "ratings.dat.gz"]))
def test_ml1m_random_bytes_fuzz(tmp_path, data, name):
    case = _fresh(tmp_path)
    raw = case / "raw"
    raw.mkdir()
    (raw / name).write_bytes(data)
    _run_prepare(raw, case / "out", "ml-1m")


csv_text = st.text(st.characters(codec="utf-8"), max_size=4)
csv_cell = st.one_of(
    st.integers(0, 50).map(str),
    st.integers(-5, 2_000_000_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    csv_text,
    st.just('"quoted,cell"'),
    st.just('"unterminated'),
)


@FUZZ
@given(
    st.lists(st.lists(csv_cell, min_size=0, max_size=5), max_size=10),
    st.sampled_from([",", ";", "\t"]),
    st.booleans(),
    st.booleans(),
)
def test_generic_csv_fuzz(tmp_path, rows, sep, with_time, with_rating):
    case = _fresh(tmp_path)
    header = ["user", "item", "ts", "stars"]
    text = "\n".join(sep.join(row) for row in [header, *rows]) + "\n"
    raw = case / "clicks.csv"
    raw.write_text(text, encoding="utf-8")
    options = GenericOptions(
        user_col="user",
        item_col="item",
        time_col="ts" if with_time else None,
        rating_col="stars" if with_rating else None,
        sep=sep,
    )
    result, message = _run_prepare(raw, case / "out", "generic", generic=options)
    if result is not None:
        assert result.name == "clicks"
        assert math.isfinite(result.density)


@pytest.mark.parametrize("dataset", ["ml-1m", "generic"])
def test_fuzz_helpers_see_failures(tmp_path, dataset):
    """The property's failure branch is reached (a bad line is reported with its number)."""
    raw = tmp_path / ("raw" if dataset == "ml-1m" else "clicks.csv")
    if dataset == "ml-1m":
        raw.mkdir()
        (raw / "ratings.dat").write_text("1::2::5::978300760\n1::2::x::1\n", encoding="latin-1")
        options = {}
    else:
        raw.write_text("user,item\n1\n", encoding="utf-8")
        options = {"generic": GenericOptions(user_col="user", item_col="item")}
    result, message = _run_prepare(raw, tmp_path / "out", dataset, **options)
    assert result is None and _line_number(message) == 2


def test_lone_carriage_return_in_a_csv_line(tmp_path):
    raw = tmp_path / "clicks.csv"
    raw.write_bytes(b"user,item\n\r,0\n")
    result, message = _run_prepare(
        raw, tmp_path / "out", "generic", generic=GenericOptions("user", "item", sep=",")
    )
    assert result is None and "unreadable CSV line" in message and _line_number(message) == 2
