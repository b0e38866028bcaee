"""Tests of ``python -m recbole_hdccf.prepare`` (raw data -> RecBole atomic files)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from recbole_hdccf.prepare import GenericOptions, PrepareError, main, prepare

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "prepare"
# A real GroupLens ml-1m copy cut to users 1-2999, kept outside the repository.
REAL_ML1M = Path(__file__).resolve().parents[2] / "shared/datasets/raw/ml-1m-users-1-2999"
needs_real_ml1m = pytest.mark.skipif(
    not (REAL_ML1M / "ratings.dat.gz").exists(),
    reason=f"real MovieLens ml-1m sample not found at {REAL_ML1M} (../shared next to the repo)",
)


def quiet(_: str) -> None:
    """Swallow progress lines in tests that do not look at them."""


def read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of an atomic file, split on tabs (no quoting)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def utc(text: str) -> str:
    if text.endswith("Z"):  # Python 3.10's fromisoformat does not take "Z"
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return str(int(value.timestamp()))


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


# ---------------------------------------------------------------------------
# Real GroupLens files (users 1-2999)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_ml1m(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("real") / "dataset"
    log: list[str] = []
    prepare("ml-1m", REAL_ML1M, out, log=log.append)
    return out, log


@needs_real_ml1m
def test_real_ml1m_counts_and_rows(real_ml1m: tuple[Path, list[str]]) -> None:
    out, log = real_ml1m
    with gzip.open(REAL_ML1M / "ratings.dat.gz", "rt", encoding="latin-1") as fh:
        source = [line.rstrip("\n").split("::") for line in fh]
    users = {r[0] for r in source}
    items = {r[1] for r in source}
    assert len(source) == 487650 and len(users) == 2999

    header, rows = read_atomic(out / "ml-1m" / "ml-1m.inter")
    assert header == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert len(rows) == len(source)
    assert rows[:5] == source[:5]
    assert rows[-1] == source[-1]
    density = len(source) / (len(users) * len(items))
    expected = f"ml-1m: 2999 users, {len(items)} items, 487650 interactions, density {density:.4%}"
    assert log[-1] == expected
    assert any("dropped 0 duplicate" in line for line in log)


@needs_real_ml1m
def test_real_ml1m_side_files(real_ml1m: tuple[Path, list[str]]) -> None:
    out, _ = real_ml1m
    with gzip.open(REAL_ML1M / "ratings.dat.gz", "rt", encoding="latin-1") as fh:
        items = {line.split("::")[1] for line in fh}
    header, rows = read_atomic(out / "ml-1m" / "ml-1m.item")
    assert header == ["item_id:token", "movie_title:token_seq", "genre:token_seq"]
    assert {r[0] for r in rows} == items and len(rows) == len(items)
    by_id = {r[0]: r for r in rows}
    assert by_id["1"] == ["1", "Toy Story (1995)", "Animation Children's Comedy"]
    assert by_id["73"][1] == "Misérables, Les (1995)"  # latin-1 0xe9 decoded
    header, rows = read_atomic(out / "ml-1m" / "ml-1m.user")
    assert header[0] == "user_id:token" and len(header) == 5
    assert len(rows) == 2999
    assert rows[0] == ["1", "F", "1", "10", "48067"]


@needs_real_ml1m
def test_real_ml1m_manifest_verifies(real_ml1m: tuple[Path, list[str]]) -> None:
    folder = real_ml1m[0] / "ml-1m"
    entries = {}
    for line in (folder / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split("  ", 1)
        entries[name] = digest
    assert {"ml-1m.inter", "ml-1m.item", "ml-1m.user"} <= set(entries)
    assert str((REAL_ML1M / "ratings.dat.gz").resolve()) in entries
    for name, digest in entries.items():
        path = folder / name if not os.path.isabs(name) else Path(name)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["MANIFEST.sha256", "ml-1m.inter", "ml-1m.item", "ml-1m.user"]
    )


@needs_real_ml1m
def test_real_ml1m_loads_in_recbole(
    real_ml1m: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recbole.config import Config
    from recbole.data import create_dataset

    monkeypatch.chdir(tmp_path)  # RecBole writes ./log and ./saved
    monkeypatch.setattr(sys, "argv", ["x"])  # Config parses sys.argv
    config = Config(
        model="BPR",
        dataset="ml-1m",
        config_dict={
            "data_path": str(real_ml1m[0]),
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "use_gpu": False,
            "show_progress": False,
        },
    )
    data = create_dataset(config)
    assert (data.user_num, data.inter_num) == (3000, 487650)  # + RecBole's padding id
    stats = real_ml1m[1][-1]
    assert f", {data.item_num - 1} items," in stats


# ---------------------------------------------------------------------------
# Synthetic fixtures, one per format
# ---------------------------------------------------------------------------


def test_ml100k_folder_and_zip(tmp_path: Path) -> None:
    log: list[str] = []
    result = prepare("ml-100k", FIXTURES / "ml-100k", tmp_path / "a", log=log.append)
    header, rows = read_atomic(tmp_path / "a/ml-100k/ml-100k.inter")
    assert header == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    # (1, 10) twice: the later one (line 6, 881250960) is kept, at its own position.
    assert rows == [
        ["1", "20", "3", "881250950"],
        ["2", "10", "5", "881250951"],
        ["2", "30", "1", "881250952"],
        ["3", "20", "2", "881250953"],
        ["1", "10", "5", "881250960"],
    ]
    assert log[-1] == "ml-100k: 3 users, 3 items, 5 interactions, density 55.5556%"
    assert result.n_duplicates == 1
    _, items = read_atomic(tmp_path / "a/ml-100k/ml-100k.item")
    assert items == [
        ["10", "Café au Lait (1993)", "Comedy"],
        ["20", "Toy Story (1995)", "Animation Children's Comedy"],
        ["30", "Misérables, Les (1995)", "Drama Musical"],
    ]
    header, users = read_atomic(tmp_path / "a/ml-100k/ml-100k.user")
    assert header[:3] == ["user_id:token", "age:token", "gender:token"]
    assert [u[0] for u in users] == ["1", "2", "3"]

    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("u.data", "u.item", "u.user"):
            zf.write(FIXTURES / "ml-100k" / name, f"ml-100k/{name}")
    prepare("ml-100k", archive, tmp_path / "b", log=quiet)
    for suffix in ("inter", "item", "user"):
        a = (tmp_path / f"a/ml-100k/ml-100k.{suffix}").read_bytes()
        assert (tmp_path / f"b/ml-100k/ml-100k.{suffix}").read_bytes() == a


def test_ml1m_zip_with_gzip_member_and_latin1(tmp_path: Path) -> None:
    archive = tmp_path / "ml-1m.zip"
    ratings = b"1::5::4::978300760\n2::5::3.5::978300761\n2::7::1::978300762\n"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-1m/ratings.dat.gz", gzip.compress(ratings))
        zf.writestr(
            "ml-1m/movies.dat", "5::Café (1990)::Comedy|Film-Noir\n7::X::Drama\n".encode("latin-1")
        )
        zf.writestr("ml-1m/users.dat", b"1::F::1::10::48067\n2::M::56::16::70072\n")
        zf.writestr("ml-1m/README", b"not data")
    prepare("ml-1m", archive, tmp_path / "out", log=quiet)
    _, rows = read_atomic(tmp_path / "out/ml-1m/ml-1m.inter")
    assert rows == [
        ["1", "5", "4", "978300760"],
        ["2", "5", "3.5", "978300761"],
        ["2", "7", "1", "978300762"],
    ]
    _, items = read_atomic(tmp_path / "out/ml-1m/ml-1m.item")
    assert items[0] == ["5", "Café (1990)", "Comedy Film-Noir"]
    manifest = (tmp_path / "out/ml-1m/MANIFEST.sha256").read_text()
    assert f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  {archive.resolve()}" in manifest


def test_ml20m_csv(tmp_path: Path) -> None:
    log: list[str] = []
    prepare("ml-20m", FIXTURES / "ml-20m", tmp_path, log=log.append)
    _, rows = read_atomic(tmp_path / "ml-20m/ml-20m.inter")
    assert rows == [
        ["1", "2", "3.5", "1112486027"],
        ["1", "29", "3.5", "1112484676"],
        ["2", "2", "4", "1112486000"],
        ["2", "32", "0.5", "1112484819"],
    ]
    assert log[-1] == "ml-20m: 2 users, 3 items, 4 interactions, density 66.6667%"
    text = (tmp_path / "ml-20m/ml-20m.item").read_text(encoding="utf-8").splitlines()
    assert text[1:] == [
        "2\tJumanji (1995)\tAdventure Children Fantasy",
        (
            "29\tCity of Lost Children, The (Cité des enfants perdus, La) (1995)\t"
            "Adventure Drama Fantasy Mystery Sci-Fi"
        ),
        # quoted for pandas' reader (RecBole): the title is "Great Performances" Cats (1998)
        '32\t"""Great Performances"" Cats (1998)"\t(no_genres_listed)',
    ]
    # The same format also serves ml-25m, read straight from the ratings file.
    prepare("ml-25m", FIXTURES / "ml-20m/ratings.csv", tmp_path, log=quiet)
    assert (tmp_path / "ml-25m/ml-25m.item").exists()


def test_ml10m_zip_and_side_file_encoding(tmp_path: Path) -> None:
    movies = "122::Café Society (1995)::Drama\n".encode() + "200::Amélie (2001)::Comedy\n".encode(
        "latin-1"
    )  # UTF-8, with a stray latin-1 line that the fallback decodes
    archive = _zip(
        tmp_path / "ml-10m.zip",
        {
            "ml-10M100K/ratings.dat": b"1::122::5::838985046\n1::200::4.5::838983525\n",
            "ml-10M100K/movies.dat": movies,
        },
    )
    result = prepare("ml-10m", archive, tmp_path, log=quiet)
    assert (result.n_users, result.n_items, result.n_interactions) == (1, 2, 2)
    _, rows = read_atomic(tmp_path / "ml-10m/ml-10m.inter")
    assert rows == [["1", "122", "5", "838985046"], ["1", "200", "4.5", "838983525"]]
    _, items = read_atomic(tmp_path / "ml-10m/ml-10m.item")
    assert items == [["122", "Café Society (1995)", "Drama"], ["200", "Amélie (2001)", "Comedy"]]
    assert not (tmp_path / "ml-10m/ml-10m.user").exists()


def test_yelp_kcore_hand_computed(tmp_path: Path) -> None:
    raw = FIXTURES / "yelp"
    log: list[str] = []
    result = prepare("yelp", raw, tmp_path, kcore=2, log=log.append)
    # After de-duplication (A-x twice: the 2016 review is newer than the 2015 one):
    # A-x A-y B-x B-y C-x C-z D-w.  Round 1 drops D (1 review), z and w (1 each);
    # then C has only C-x left, round 2 drops it.  A and B with x and y remain.
    _, rows = read_atomic(tmp_path / "yelp/yelp.inter")
    assert rows == [
        ["A", "x", "5", utc("2016-01-01 10:00:00")],
        ["A", "y", "4", utc("2016-01-02 10:00:00")],
        ["B", "x", "3", utc("2016-01-03 10:00:00")],
        ["B", "y", "2", utc("2016-01-04 10:00:00")],
    ]
    assert (result.n_duplicates, result.n_kcore_removed) == (1, 3)
    assert "yelp: 2-core filter removed 3 interaction(s) in 2 round(s)" in log
    assert log[-1] == "yelp: 2 users, 2 items, 4 interactions, density 100.0000%"
    _, items = read_atomic(tmp_path / "yelp/yelp.item")
    assert items == [
        ["x", "Xavier's Pizza", "Pizza Fast_Food Restaurants"],
        ["y", "Y Café", "Coffee_&_Tea"],
    ]

    # The tar archive Yelp distributes works the same way.
    archive = tmp_path / "yelp_dataset.tar"
    with tarfile.open(archive, "w") as tf:
        for member in sorted(raw.iterdir()):
            tf.add(member, member.name)
    prepare("yelp", archive, tmp_path / "tar", kcore=2, log=quiet)
    for suffix in ("inter", "item"):
        expected = (tmp_path / f"yelp/yelp.{suffix}").read_bytes()
        assert (tmp_path / f"tar/yelp/yelp.{suffix}").read_bytes() == expected

    none = prepare("yelp", raw, tmp_path / "k0", kcore=0, log=quiet)
    assert (none.n_users, none.n_items, none.n_interactions) == (4, 4, 7)
    # The default (10-core) leaves nothing of this toy file: a clear error, no output.
    with pytest.raises(PrepareError, match="no interaction is left after the 10-core"):
        prepare("yelp", raw, tmp_path / "k10", log=quiet)
    assert not (tmp_path / "k10").exists()


def test_gowalla(tmp_path: Path) -> None:
    raw = FIXTURES / "gowalla/loc-gowalla_totalCheckins.txt"
    result = prepare("gowalla", raw, tmp_path, kcore=0, log=quiet)
    assert (result.n_users, result.n_items, result.n_interactions) == (3, 3, 6)
    header, rows = read_atomic(tmp_path / "gowalla/gowalla.inter")
    assert header == ["user_id:token", "item_id:token", "timestamp:float"]
    assert rows[0] == ["0", "22847", utc("2010-10-19T23:55:27Z")]
    # user 1 checked in at 316637 twice: the later check-in (line 5) stays.
    assert ["1", "316637", utc("2010-10-16T18:50:42Z")] in rows
    assert ["1", "316637", utc("2010-10-12T23:58:03Z")] not in rows
    _, items = read_atomic(tmp_path / "gowalla/gowalla.item")
    assert items[0] == ["22847", "30.2359091167", "-97.7951395833"]

    result = prepare("gowalla", raw, tmp_path / "k2", kcore=2, log=quiet)
    _, rows = read_atomic(tmp_path / "k2/gowalla/gowalla.inter")
    assert sorted((r[0], r[1]) for r in rows) == [
        ("0", "22847"),
        ("0", "316637"),
        ("1", "22847"),
        ("1", "316637"),
    ]


def test_generic_csv_iso_times_and_quotes(tmp_path: Path) -> None:
    code = main(
        [
            "generic",
            "--raw",
            str(FIXTURES / "generic/clicks.csv"),
            "--out",
            str(tmp_path),
            "--user-col",
            "uid",
            "--item-col",
            "1",
            "--time-col",
            "when",
            "--rating-col",
            "score",
        ]
    )
    assert code == 0
    header, rows = read_atomic(tmp_path / "clicks/clicks.inter")
    assert header == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert rows == [
        ["u1", "i1", "1", utc("2020-01-01T00:00:00Z")],
        ["u1", "i2", "2.5", "1577923200"],
        ["u,2", "i1", "3", utc("2020-01-03 12:00:00")],
        ["u3", "i3", "4", utc("2020-01-04T00:00:00+01:00")],
    ]


def test_generic_tsv_dedup_keeps_latest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generic", "--raw", str(FIXTURES / "generic/dedup.tsv"), "--out", str(tmp_path)]
    cols = ["--no-header", "--user-col", "0", "--item-col", "1", "--time-col", "2"]
    assert main([*args, *cols, "--rating-col", "3", "--name", "d"]) == 0
    printed = capsys.readouterr().out
    assert "d: dropped 3 duplicate (user, item) interaction(s)" in printed
    _, rows = read_atomic(tmp_path / "d/d.inter")
    # (u1,i1): t=300 on lines 3 and 5, a tie -> the last line (5); (u1,i2): t=50 > 40.
    assert rows == [["u1", "i2", "2", "50"], ["u2", "i1", "4", "200"], ["u1", "i1", "5", "300"]]
    # Without a time column, the last line of each pair wins.
    assert main([*args, "--no-header", "--user-col", "0", "--item-col", "1", "--name", "n"]) == 0
    _, rows = read_atomic(tmp_path / "n/n.inter")
    assert rows == [["u2", "i1"], ["u1", "i1"], ["u1", "i2"]]


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    raw = FIXTURES / "ml-100k"
    prepare("ml-100k", raw, tmp_path, log=quiet)
    marker = tmp_path / "ml-100k/old.txt"
    marker.write_text("old")
    with pytest.raises(PrepareError, match="already exists.*--overwrite"):
        prepare("ml-100k", raw, tmp_path, log=quiet)
    assert marker.exists()
    # A failing run with --overwrite keeps the old folder untouched.
    with pytest.raises(PrepareError):
        prepare("ml-100k", FIXTURES / "ml-20m", tmp_path, overwrite=True, log=quiet)
    assert marker.exists()
    prepare("ml-100k", raw, tmp_path, overwrite=True, log=quiet)
    assert not marker.exists() and (tmp_path / "ml-100k/ml-100k.inter").exists()
    assert leftovers(tmp_path) == ["ml-100k"]


# ---------------------------------------------------------------------------
# Bad input: a clear PrepareError naming file, line, problem and fix; no output
# ---------------------------------------------------------------------------


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


GOOD_ML1M = "1::5::4::978300760\n2::5::3::978300761\n"
YELP_LINE = '{"user_id": "A", "business_id": "x", "stars": 5, "date": "2016-01-01 10:00:00"}\n'


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _truncated_gz(path: Path) -> Path:
    data = gzip.compress(("1::5::4::978300760\n" * 5000).encode())
    return write(path, data[: len(data) // 2])


BAD_CASES = {
    # id: (dataset, raw file name, content or builder, extra kwargs, file shown, line, message)
    "csv-given-as-ml-1m": (
        "ml-1m",
        "ratings.dat",
        "1,5,4,978300760\n",
        {},
        "ratings.dat",
        1,
        "expected 4 fields",
    ),
    "truncated-line": (
        "ml-1m",
        "ratings.dat",
        GOOD_ML1M + "3::5::4\n",
        {},
        "ratings.dat",
        3,
        "got 3 field",
    ),
    "non-numeric-rating": (
        "ml-100k",
        "u.data",
        "1\t10\t4\t881250949\n1\t20\tfive\t881250950\n",
        {},
        "u.data",
        2,
        "rating 'five' is not a number",
    ),
    "non-numeric-timestamp": (
        "ml-20m",
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3.5,yesterday\n",
        {},
        "ratings.csv",
        2,
        "timestamp 'yesterday' is not a number",
    ),
    "nan-rating": (
        "ml-1m",
        "ratings.dat",
        "1::5::nan::978300760\n",
        {},
        "ratings.dat",
        1,
        "not a finite number",
    ),
    "wrong-csv-header": (
        "ml-20m",
        "ratings.csv",
        "user,movie,rating,time\n1,2,3,4\n",
        {},
        "ratings.csv",
        1,
        "expected the header",
    ),
    "empty-file": ("ml-1m", "ratings.dat", "", {}, "ratings.dat", None, "holds no interactions"),
    "blank-lines-only": (
        "gowalla",
        "loc-gowalla_totalCheckins.txt",
        "\n\n",
        {"kcore": 0},
        "loc-gowalla",
        None,
        "no interactions",
    ),
    "duplicated-lines": (
        "ml-1m",
        "ratings.dat",
        GOOD_ML1M + "1::5::4::978300760\n",
        {"duplicates": "error"},
        "ratings.dat",
        3,
        "same user and item as line 1",
    ),
    "yelp-not-utf8": (
        "yelp",
        "yelp_academic_dataset_review.json",
        YELP_LINE.encode() + b'{"user_id": "B\xff", "business_id": "x"}\n',
        {"kcore": 0},
        "review.json",
        2,
        "not valid utf-8",
    ),
    "yelp-truncated-json": (
        "yelp",
        "yelp_academic_dataset_review.json",
        YELP_LINE + YELP_LINE + '{"user_id": "B", "busi',
        {"kcore": 0},
        "review.json",
        3,
        "not valid JSON",
    ),
    "yelp-missing-field": (
        "yelp",
        "yelp_academic_dataset_review.json",
        '{"user_id": "A", "stars": 5, "date": "2016-01-01"}\n',
        {"kcore": 0},
        "review.json",
        1,
        "'business_id'",
    ),
    "yelp-bad-date": (
        "yelp",
        "yelp_academic_dataset_review.json",
        YELP_LINE.replace("2016-01-01 10:00:00", "last week"),
        {"kcore": 0},
        "review.json",
        1,
        "date 'last week'",
    ),
    "gowalla-bad-time": (
        "gowalla",
        "loc-gowalla_totalCheckins.txt",
        "0\t2010-13-19T23:55:27Z\t30.2\t-97.7\t22847\n",
        {"kcore": 0},
        "loc-gowalla",
        1,
        "check-in time",
    ),
    "truncated-gzip": (
        "ml-1m",
        "ratings.dat.gz",
        _truncated_gz,
        {},
        "ratings.dat.gz",
        None,
        "damaged or truncated",
    ),
    "zip-without-member": (
        "ml-1m",
        "ml-1m.zip",
        lambda p: _zip(p, {"ml-1m/movies.dat": b"1::A::B\n", "ml-1m/README": b""}),
        {},
        "ml-1m.zip",
        None,
        "no ratings.dat",
    ),
    "not-a-zip": (
        "ml-1m",
        "ml-1m.zip",
        "this is html, not a zip\n",
        {},
        "ml-1m.zip",
        None,
        "not a readable zip",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_input(case: str, tmp_path: Path) -> None:
    dataset, name, content, kwargs, shown, line, message = BAD_CASES[case]
    raw = tmp_path / "raw" / name
    if callable(content):
        raw.parent.mkdir()
        content(raw)
    else:
        write(raw, content)
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as info:
        prepare(dataset, raw, out, log=quiet, **kwargs)
    text = str(info.value)
    assert message in text
    assert shown in text
    if line is not None:
        assert f", line {line}:" in text
    assert not out.exists(), "nothing may be written after a failure"


def test_bad_generic_input(tmp_path: Path) -> None:
    out = tmp_path / "out"
    raw = write(tmp_path / "x.csv", "user,item,time\nu1,i1,5\nu2,i2\n")
    cases = [
        ({"user_col": "user", "item_col": "item", "time_col": "when"}, "no column 'when'", 1),
        ({"user_col": "user", "item_col": "item", "time_col": "time"}, "only 2 field(s)", 3),
        ({"user_col": "user", "item_col": "3"}, "only 3 field(s)", 2),
    ]
    for options, message, line in cases:
        with pytest.raises(PrepareError, match=re.escape(message)) as info:
            prepare("generic", raw, out, generic=GenericOptions(**options), log=quiet)
        assert f"x.csv, line {line}:" in str(info.value)
    bad_time = write(tmp_path / "t.tsv", "u1\ti1\tnoon\n")
    options = GenericOptions(user_col="0", item_col="1", time_col="2", header=False)
    with pytest.raises(PrepareError, match="'noon' is neither a number nor an ISO 8601"):
        prepare("generic", bad_time, out, generic=options, log=quiet)
    latin = write(tmp_path / "l.tsv", "u1\ti1\nu2\ti2\nu\xe9\ti3\n".encode("latin-1"))
    with pytest.raises(PrepareError, match=r"l\.tsv, line 3: not valid utf-8"):
        prepare(
            "generic",
            latin,
            out,
            generic=GenericOptions(user_col="0", item_col="1", header=False),
            log=quiet,
        )
    # ... and --encoding latin-1 is the fix the message suggests.
    prepare(
        "generic",
        latin,
        out,
        generic=GenericOptions(user_col="0", item_col="1", header=False, encoding="latin-1"),
        log=quiet,
    )
    _, rows = read_atomic(out / "l/l.inter")
    assert rows[-1] == ["ué", "i3"]
    empty = write(tmp_path / "e.csv", "")
    with pytest.raises(PrepareError, match=r"e\.csv: the file is empty"):
        prepare(
            "generic",
            empty,
            tmp_path / "o2",
            generic=GenericOptions(user_col="a", item_col="b"),
            log=quiet,
        )
    assert not (tmp_path / "o2").exists()


def test_missing_raw_path(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="raw path does not exist") as info:
        prepare("ml-1m", tmp_path / "nowhere.zip", tmp_path / "out", log=quiet)
    assert "nowhere.zip" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_failure_while_writing_leaves_nothing(tmp_path: Path) -> None:
    """A failure after the temporary folder was made removes it (and folders we made)."""

    def fail_after_item_file(line: str) -> None:
        if "item features" in line:  # logged after the .item file was written
            raise OSError("disk full (simulated)")

    out = tmp_path / "existing"
    (out / "other").mkdir(parents=True)
    with pytest.raises(OSError, match="disk full"):
        prepare("ml-100k", FIXTURES / "ml-100k", out, log=fail_after_item_file)
    assert leftovers(out) == ["other"]
    with pytest.raises(OSError, match="disk full"):
        prepare("ml-100k", FIXTURES / "ml-100k", tmp_path / "new/sub", log=fail_after_item_file)
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def test_cli_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write(tmp_path / "ratings.dat", GOOD_ML1M + "3::5::x::978300760\n")
    code = main(["ml-1m", "--raw", str(raw), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("error: ") and "ratings.dat, line 3: rating 'x'" in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_cli_module_subprocess(tmp_path: Path) -> None:
    """``python -m recbole_hdccf.prepare``: exit 2 with one error line, then success."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "recbole_hdccf.prepare",
        "ml-1m",
        "--out",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(
        [*command, "--raw", str(tmp_path / "missing")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    # (importing the package imports RecBole, whose dependencies may print warnings first)
    assert proc.stderr.splitlines()[-1].startswith("error: "), proc.stderr
    assert "missing: the raw path does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    raw = write(tmp_path / "raw/ratings.dat", GOOD_ML1M)
    proc = subprocess.run(
        [*command, "--raw", str(raw)], check=False, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout.splitlines()[-1] == "ml-1m: 2 users, 1 items, 2 interactions, density 100.0000%"
    )


# ---------------------------------------------------------------------------
# RecBole reads what we write (quoting, token_seq, floats)
# ---------------------------------------------------------------------------


def test_synthetic_loads_in_recbole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recbole.config import Config
    from recbole.data import create_dataset

    prepare("ml-20m", FIXTURES / "ml-20m", tmp_path / "data", log=quiet)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["x"])
    config = Config(
        model="BPR",
        dataset="ml-20m",
        config_dict={
            "data_path": str(tmp_path / "data"),
            "load_col": {
                "inter": ["user_id", "item_id", "rating", "timestamp"],
                "item": ["item_id", "movie_title", "genre"],
            },
            "use_gpu": False,
            "show_progress": False,
        },
    )
    data = create_dataset(config)
    assert (data.user_num, data.item_num, data.inter_num) == (3, 4, 4)
    tokens = set(data.field2id_token["movie_title"])
    assert {'"Great', 'Performances"', "(Cité"} <= tokens
    assert "(no_genres_listed)" in set(data.field2id_token["genre"])
    frame = data.inter_feat
    assert sorted(frame["rating"].tolist()) == [0.5, 3.5, 3.5, 4.0]
    assert int(frame["timestamp"].max()) == 1112486027


def test_stdout_is_not_used_by_library(tmp_path: Path) -> None:
    """``prepare(log=...)`` routes every progress line through ``log``."""
    buffer = io.StringIO()
    stdout, sys.stdout = sys.stdout, buffer
    try:
        prepare("ml-100k", FIXTURES / "ml-100k", tmp_path, log=quiet)
    finally:
        sys.stdout = stdout
    assert buffer.getvalue() == ""
