"""Convert raw public recommendation data sets into RecBole atomic files.

Usage::

    python -m recbole_hdccf.prepare ml-1m --raw ~/Downloads/ml-1m.zip --out dataset

writes ``dataset/ml-1m/ml-1m.inter`` (plus ``ml-1m.item`` / ``ml-1m.user``
where the source has them) and ``dataset/ml-1m/MANIFEST.sha256``, then prints
the statistics line of the paper's Table 2::

    ml-1m: 6040 users, 3706 items, 1000209 interactions, density 4.4684%

Supported formats (``DATASET``): ``ml-100k``, ``ml-1m``, ``ml-10m``,
``ml-20m``, ``ml-25m`` (GroupLens zip or extracted folder), ``yelp`` (Yelp
Open Dataset JSON lines), ``gowalla`` (SNAP ``loc-gowalla_totalCheckins``)
and ``generic`` (any CSV/TSV, columns chosen with ``--user-col`` etc.).
See ``docs/data.md`` for download pages and defaults.

Policies:

* Ids are written exactly as in the source (they are mapped to int codes
  only internally).
* Duplicated (user, item) interactions: keep the latest one (largest
  timestamp; on a tie the last line).  The number dropped is always printed;
  ``--duplicates error`` turns them into an error instead.
* ``--kcore K`` (iterative, after de-duplication) drops users and items with
  fewer than K interactions until none is left; 0 disables it.  Defaults: 10
  for ``yelp`` and ``gowalla``, 0 otherwise.
* ``.item`` / ``.user`` rows are kept only for ids present in the written
  ``.inter`` file, so RecBole's user/item counts equal the printed ones.

Memory: files are streamed line by line (zip/tar members and gzip files as
streams); each interaction is kept as compact machine numbers (user and item
codes, rating, timestamp, line number: 28 bytes), plus one dict entry per
distinct user and item id.  De-duplication with ``numpy.lexsort`` peaks at
about 50 bytes per interaction (ml-25m: about 1.3 GB).

Errors in the input raise :class:`PrepareError` (a ``ValueError``) naming the
file, the 1-based line number, the problem and the fix; the command line
prints ``error: ...`` and exits with status 2.  Output is written into a
temporary folder inside ``--out`` and moved into place only on success.

This module imports neither torch nor RecBole, so it starts fast.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import datetime as dt
import functools
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["DATASETS", "DEFAULT_KCORE", "PrepareError", "PrepareResult", "main", "prepare"]

DATASETS = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "yelp", "gowalla", "generic")
#: k-core applied when ``--kcore`` is not given (0: none).
DEFAULT_KCORE = {"yelp": 10, "gowalla": 10}
DUPLICATE_POLICIES = ("latest", "error")

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

# Strings that pandas (and so RecBole) reads as a missing value.
_PANDAS_NA = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND"]
    + ["1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)

_CHUNK = 1 << 16
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


class PrepareError(ValueError):
    """Bad raw input or arguments; the message says where, what and how to fix it."""


def _fail(where: str, lineno: int | None, problem: str, fix: str) -> PrepareError:
    """Build a :class:`PrepareError` with a uniform ``file, line N: problem. fix`` message."""
    place = f"{where}, line {lineno}" if lineno is not None else where
    return PrepareError(f"{place}: {problem}. {fix}")


# --------------------------------------------------------------------------
# Raw sources: a folder, a zip or tar archive, or a single (possibly gzip) file
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One raw file: a plain file, or a member of a zip/tar archive (maybe gzip-compressed)."""

    display: str
    path: Path
    inner: str | None = None


class RawSource:
    """Finds and opens the raw files of a data set given by ``--raw``."""

    def __init__(self, raw: Path, dataset: str) -> None:
        self.raw = raw
        self.dataset = dataset
        self.primary: Path | None = None
        self.hashed: list[Path] = []
        if not raw.exists():
            raise _fail(
                str(raw),
                None,
                "the raw path does not exist",
                "Pass --raw the downloaded archive, its extracted folder or the data file itself",
            )
        if raw.is_dir():
            self.kind, self.root = "dir", raw
            self._names = sorted(
                p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()
            )
        elif _is_zip(raw):
            self.kind, self.root = "zip", raw
            try:
                with zipfile.ZipFile(raw) as zf:
                    self._names = [i.filename for i in zf.infolist() if not i.is_dir()]
            except (zipfile.BadZipFile, OSError) as exc:
                raise _fail(
                    str(raw), None, f"not a readable zip archive ({exc})", "Download it again"
                ) from None
        elif _is_tar(raw):
            self.kind, self.root = "tar", raw
            try:
                with tarfile.open(raw) as tf:
                    self._names = [m.name for m in tf.getmembers() if m.isfile()]
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise _fail(
                    str(raw), None, f"not a readable tar archive ({exc})", "Download it again"
                ) from None
        else:
            # A single data file: it is the interactions file; side files are looked up next to it.
            self.kind, self.root, self.primary = "dir", raw.parent, raw
            self._names = sorted(p.name for p in raw.parent.iterdir() if p.is_file())

    def find(self, names: Sequence[str], *, primary: bool, what: str) -> Member | None:
        """Return the member whose base name is one of ``names`` (or ``name.gz``).

        With ``primary`` the member is required (a single given file is
        returned as is); otherwise ``None`` is returned when absent.
        """
        if primary and self.primary is not None:
            return self._member(self.primary.name)
        for name in names:
            for candidate in (name, name + ".gz"):
                hits = [n for n in self._names if n.rsplit("/", 1)[-1] == candidate]
                if hits:
                    return self._member(min(hits, key=lambda n: (n.count("/"), n)))
        if not primary:
            return None
        shown = ", ".join(self._names[:8]) + (", ..." if len(self._names) > 8 else "") or "nothing"
        raise _fail(
            str(self.raw),
            None,
            f"no {' or '.join(names)} ({what}) found; it holds {shown}",
            f"Pass the {self.dataset} download from its official page (see docs/data.md), "
            "its extracted folder, or the file itself",
        )

    def _member(self, name: str) -> Member:
        if self.kind == "dir":
            path = self.root / name
            self._hash(path)
            return Member(str(path), path)
        self._hash(self.root)
        return Member(f"{self.root}:{name}", self.root, name)

    def _hash(self, path: Path) -> None:
        if path not in self.hashed:
            self.hashed.append(path)

    @contextlib.contextmanager
    def open(self, member: Member) -> Iterator[IO[bytes]]:
        """Open ``member`` as a binary stream, decompressing gzip on the fly."""
        with contextlib.ExitStack() as stack:
            if member.inner is None:
                stream: IO[bytes] = stack.enter_context(open(member.path, "rb"))
            elif self.kind == "zip":
                zf = stack.enter_context(zipfile.ZipFile(member.path))
                stream = stack.enter_context(io.BufferedReader(zf.open(member.inner), 1 << 20))  # type: ignore[arg-type]
            else:
                tf = stack.enter_context(tarfile.open(member.path))
                extracted = tf.extractfile(member.inner)
                if extracted is None:
                    raise _fail(
                        member.display, None, "not a regular file", "Pass the archive as downloaded"
                    )
                stream = stack.enter_context(extracted)
            if _starts_with(stream, b"\x1f\x8b"):
                stream = stack.enter_context(gzip.GzipFile(fileobj=stream, mode="rb"))
            yield stream


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04" or path.suffix.lower() == ".zip"


def _is_tar(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def _starts_with(stream: IO[bytes], magic: bytes) -> bool:
    """Whether ``stream`` starts with ``magic``; the stream is left at its start."""
    if stream.seekable():
        head = stream.read(len(magic))
        stream.seek(0)
        return head == magic
    peek = getattr(stream, "peek", None)
    return peek is not None and peek(len(magic))[: len(magic)] == magic


def _raw_lines(source: RawSource, member: Member) -> Iterator[tuple[int, bytes]]:
    """Yield ``(1-based line number, raw line)`` of ``member``, streaming."""
    lineno = 0
    with source.open(member) as stream:
        try:
            for lineno, line in enumerate(stream, 1):
                yield lineno, line
        except (
            EOFError,
            zlib.error,
            zipfile.BadZipFile,
            gzip.BadGzipFile,
            tarfile.TarError,
        ) as exc:
            raise _fail(
                member.display,
                lineno + 1,
                f"the compressed data is damaged or truncated ({exc})",
                "Download the file again",
            ) from None


def _decode(line: bytes, encoding: str, where: str, lineno: int) -> str:
    """Decode one raw line, dropping its line ending and a UTF-8 byte order mark."""
    try:
        text = line.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _fail(
            where,
            lineno,
            f"not valid {encoding} text (byte 0x{line[exc.start]:02x} at column {exc.start + 1})",
            f"Convert the file to {encoding} (e.g. iconv -f latin1 -t utf-8)"
            + (" or pass --encoding" if encoding != "latin-1" else ""),
        ) from None
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    return text.rstrip("\r\n")


def _text_lines(
    source: RawSource, member: Member, encoding: str, stats: ReadStats
) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` of the non-blank lines of ``member``."""
    where = member.display
    for lineno, raw in _raw_lines(source, member):
        text = _decode(raw, encoding, where, lineno)
        if not text.strip():
            stats.blank += 1
            continue
        yield lineno, text


def _decode_fallback(line: bytes) -> str:
    """Decode UTF-8, falling back to latin-1 (MovieLens side files of unknown encoding)."""
    try:
        return line.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError:
        return line.decode("latin-1").rstrip("\r\n")


def _fallback_lines(source: RawSource, member: Member) -> Iterator[tuple[int, str]]:
    for lineno, raw in _raw_lines(source, member):
        text = _decode_fallback(raw)
        if text.strip():
            yield lineno, text


# --------------------------------------------------------------------------
# Interaction buffer
# --------------------------------------------------------------------------


class Vocab:
    """Maps id strings to dense int codes, keeping the strings for writing back."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []

    def code(self, name: str) -> int:
        code = self.index.get(name)
        if code is None:
            code = self.index[name] = len(self.names)
            self.names.append(name)
        return code


@dataclass
class ReadStats:
    """What the readers noticed, for the report."""

    blank: int = 0


class InteractionBuffer:
    """Accumulates interactions as compact arrays (28 bytes each) in source order."""

    def __init__(self, where: str, *, has_rating: bool, has_time: bool) -> None:
        self.where = where
        self.has_rating = has_rating
        self.has_time = has_time
        self.users = Vocab()
        self.items = Vocab()
        self.user = array("i")
        self.item = array("i")
        self.rating = array("d")
        self.time = array("d")
        self.line = array("I")

    def adder(self) -> Callable[[str, str, float, float, int], None]:
        """Return a fast ``add(user, item, rating, time, lineno)`` closure."""
        ucode, icode = self.users.code, self.items.code
        u_add, i_add, r_add, t_add, l_add = (
            self.user.append,
            self.item.append,
            self.rating.append,
            self.time.append,
            self.line.append,
        )
        isfinite, where = math.isfinite, self.where

        def add(user: str, item: str, rating: float, time: float, lineno: int) -> None:
            if not user or not item:
                raise _fail(
                    where,
                    lineno,
                    "empty user or item id",
                    "Fix or remove the line; every interaction needs both ids",
                )
            if not (isfinite(rating) and isfinite(time)):
                raise _fail(
                    where,
                    lineno,
                    f"rating {rating!r} / timestamp {time!r} is not a finite number",
                    "Fix or remove the line",
                )
            u_add(ucode(user))
            i_add(icode(item))
            r_add(rating)
            t_add(time)
            l_add(lineno)

        return add

    def __len__(self) -> int:
        return len(self.user)

    def arrays(self) -> dict[str, np.ndarray]:
        """The buffers as numpy arrays (views, no copy)."""
        return {
            "user": np.frombuffer(self.user, dtype=np.intc),
            "item": np.frombuffer(self.item, dtype=np.intc),
            "rating": np.frombuffer(self.rating, dtype=np.float64),
            "time": np.frombuffer(self.time, dtype=np.float64),
            "line": np.frombuffer(self.line, dtype=np.uintc),
        }


def _number(text: str, what: str, where: str, lineno: int) -> float:
    """Parse a float field, with an error naming the line and the fix."""
    try:
        return float(text)
    except ValueError:
        raise _fail(
            where, lineno, f"{what} {text!r} is not a number", "Fix or remove the line"
        ) from None


def _wrong_fields(
    where: str, lineno: int, text: str, expected: str, got: int, hint: str = ""
) -> PrepareError:
    """Error for a line with the wrong number of fields (wrong format or truncated)."""
    sample = text if len(text) <= 80 else text[:77] + "..."
    guess = ""
    if got == 1 and ("," in text or "\t" in text):
        guess = " The line looks comma/tab separated: is this the right DATASET? (ml-20m/ml-25m read ratings.csv; use 'generic' for other CSV/TSV files)"
    return _fail(
        where,
        lineno,
        f"expected {expected}, got {got} field(s) in {sample!r}",
        f"The line is truncated or the file has another format; fix or remove the line.{guess}{hint}",
    )


# --------------------------------------------------------------------------
# Time parsing
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 16)
def _day_seconds(date: str) -> int:
    return (dt.date.fromisoformat(date).toordinal() - _EPOCH_ORDINAL) * 86400


def parse_datetime(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 date(-time); naive values are taken as UTC.

    Raises ``ValueError`` for anything else.
    """
    n = len(text)
    if (
        (n == 19 or (n == 20 and text[19] == "Z"))
        and text[10] in "T "
        and text[13] == ":"
        and text[16] == ":"
    ):
        hours, minutes, seconds = int(text[11:13]), int(text[14:16]), int(text[17:19])
        if hours < 24 and minutes < 60 and seconds < 60 and text[11:13].isdigit():
            return float(_day_seconds(text[:10]) + hours * 3600 + minutes * 60 + seconds)
    text = text.strip()
    if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat does not take "Z"
        text = text[:-1] + "+00:00"
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


def parse_time(text: str) -> float:
    """A number of seconds, or an ISO 8601 date-time (``ValueError`` otherwise)."""
    try:
        return float(text)
    except ValueError:
        return parse_datetime(text)


# --------------------------------------------------------------------------
# Feature tables (.item / .user)
# --------------------------------------------------------------------------


@dataclass
class Features:
    """A side table; ``rows`` yields lists of strings whose first entry is the id."""

    suffix: str
    columns: list[str]
    rows: Iterable[list[str]]
    where: str


def _text_field(value: str) -> str:
    """Collapse tabs and line breaks inside free text to single spaces."""
    return " ".join(value.split()) if any(c in value for c in "\t\r\n") else value


def _tokens(values: Iterable[str]) -> str:
    """A ``token_seq`` cell: tokens joined by spaces, inner whitespace replaced by ``_``."""
    return " ".join("_".join(v.split()) for v in values if v.strip())


def _movies_dat(lines: Iterator[tuple[int, str]], where: str) -> Iterator[list[str]]:
    """``MovieID::Title::Genres`` (ml-1m, ml-10m)."""
    for lineno, text in lines:
        head, sep, rest = text.partition("::")
        title, sep2, genres = rest.rpartition("::")
        if not (sep and sep2 and head):
            raise _wrong_fields(
                where, lineno, text, "3 fields MovieID::Title::Genres", text.count("::") + 1
            )
        yield [head, _text_field(title), _tokens(genres.split("|"))]


def _users_dat(lines: Iterator[tuple[int, str]], where: str) -> Iterator[list[str]]:
    """``UserID::Gender::Age::Occupation::Zip-code`` (ml-1m)."""
    for lineno, text in lines:
        parts = text.split("::")
        if len(parts) != 5 or not parts[0]:
            raise _wrong_fields(
                where,
                lineno,
                text,
                "5 fields UserID::Gender::Age::Occupation::Zip-code",
                len(parts),
            )
        yield parts


def _u_item(lines: Iterator[tuple[int, str]], where: str) -> Iterator[list[str]]:
    """``id|title|release date|video release date|IMDb URL|19 genre flags`` (ml-100k)."""
    for lineno, text in lines:
        parts = text.split("|")
        if len(parts) < 24 or not parts[0]:
            raise _wrong_fields(where, lineno, text, "24 '|'-separated fields", len(parts))
        flags = parts[-19:]
        if any(f not in ("0", "1") for f in flags):
            raise _fail(
                where,
                lineno,
                "the last 19 fields must be 0/1 genre flags",
                "Fix or remove the line",
            )
        title = "|".join(parts[1:-22])
        yield [
            parts[0],
            _text_field(title),
            _tokens(g for g, f in zip(ML100K_GENRES, flags, strict=True) if f == "1"),
        ]


def _u_user(lines: Iterator[tuple[int, str]], where: str) -> Iterator[list[str]]:
    """``user id|age|gender|occupation|zip code`` (ml-100k)."""
    for lineno, text in lines:
        parts = text.split("|")
        if len(parts) != 5 or not parts[0]:
            raise _wrong_fields(
                where, lineno, text, "5 fields id|age|gender|occupation|zip", len(parts)
            )
        yield parts


def _movies_csv(lines: Iterator[tuple[int, str]], where: str) -> Iterator[list[str]]:
    """``movieId,title,genres`` with a header and quoted titles (ml-20m, ml-25m)."""
    first = True
    for lineno, text in lines:
        try:
            row = next(csv.reader([text]))
        except csv.Error as error:
            raise _fail(
                where, lineno, f"unreadable CSV line: {error}", "Fix the line's quoting"
            ) from None
        if first:
            first = False
            if row != ["movieId", "title", "genres"]:
                raise _fail(
                    where,
                    lineno,
                    f"expected the header movieId,title,genres, got {text!r}",
                    "Pass movies.csv from GroupLens",
                )
            continue
        if len(row) != 3 or not row[0]:
            raise _wrong_fields(where, lineno, text, "3 fields movieId,title,genres", len(row))
        yield [row[0], _text_field(row[1]), _tokens(row[2].split("|"))]


ML_ITEM_COLUMNS = ["item_id:token", "movie_title:token_seq", "genre:token_seq"]


def _side_table(
    source: RawSource,
    names: Sequence[str],
    suffix: str,
    columns: list[str],
    parser: Callable[[Iterator[tuple[int, str]], str], Iterator[list[str]]],
    encoding: str | None,
    stats: ReadStats,
) -> Features | None:
    """Read an optional side file (movies, users, businesses) if the source has it."""
    member = source.find(names, primary=False, what=suffix)
    if member is None:
        return None
    lines = (
        _fallback_lines(source, member)
        if encoding is None
        else _text_lines(source, member, encoding, stats)
    )
    return Features(suffix, columns, list(parser(lines, member.display)), member.display)


# --------------------------------------------------------------------------
# Interaction parsers: one per format
# --------------------------------------------------------------------------


@dataclass
class Parsed:
    """Everything read from the raw source."""

    inter: InteractionBuffer
    features: list[Features]
    stats: ReadStats


def _read_split_ratings(
    source: RawSource,
    member: Member,
    sep: str,
    layout: str,
    encoding: str,
    header: str | None,
    stats: ReadStats,
) -> InteractionBuffer:
    """Read ``user<sep>item<sep>rating<sep>timestamp`` lines (all MovieLens rating files)."""
    where = member.display
    buf = InteractionBuffer(where, has_rating=True, has_time=True)
    add = buf.adder()
    lines = _text_lines(source, member, encoding, stats)
    if header is not None:
        for lineno, text in lines:
            if text.strip() != header:
                raise _fail(
                    where,
                    lineno,
                    f"expected the header {header!r}, got {text[:80]!r}",
                    "Pass ratings.csv from GroupLens",
                )
            break
    for lineno, text in lines:
        parts = text.split(sep)
        if len(parts) != 4:
            raise _wrong_fields(where, lineno, text, f"4 fields {layout}", len(parts))
        user, item, rating, stamp = parts
        try:
            add(user, item, float(rating), float(stamp), lineno)
        except ValueError as exc:
            if isinstance(exc, PrepareError):
                raise
            _number(rating, "rating", where, lineno)
            _number(stamp, "timestamp", where, lineno)
            raise
    return buf


def parse_ml_1m(source: RawSource, stats: ReadStats) -> Parsed:
    """ml-1m: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), movies.dat, users.dat; latin-1."""
    member = source.find(["ratings.dat"], primary=True, what="the ratings")
    inter = _read_split_ratings(
        source, member, "::", "UserID::MovieID::Rating::Timestamp", "latin-1", None, stats
    )
    features = [
        _side_table(source, ["movies.dat"], "item", ML_ITEM_COLUMNS, _movies_dat, "latin-1", stats),
        _side_table(
            source,
            ["users.dat"],
            "user",
            ["user_id:token", "gender:token", "age:token", "occupation:token", "zip_code:token"],
            _users_dat,
            "latin-1",
            stats,
        ),
    ]
    return Parsed(inter, [f for f in features if f is not None], stats)


def parse_ml_100k(source: RawSource, stats: ReadStats) -> Parsed:
    """ml-100k: ``u.data`` (tab separated), ``u.item`` and ``u.user`` (``|`` separated, latin-1)."""
    member = source.find(["u.data"], primary=True, what="the ratings")
    inter = _read_split_ratings(
        source, member, "\t", "user<TAB>item<TAB>rating<TAB>timestamp", "latin-1", None, stats
    )
    features = [
        _side_table(source, ["u.item"], "item", ML_ITEM_COLUMNS, _u_item, "latin-1", stats),
        _side_table(
            source,
            ["u.user"],
            "user",
            ["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"],
            _u_user,
            "latin-1",
            stats,
        ),
    ]
    return Parsed(inter, [f for f in features if f is not None], stats)


def parse_ml_10m(source: RawSource, stats: ReadStats) -> Parsed:
    """ml-10m: ``ratings.dat`` (``::``) and ``movies.dat``; no user file."""
    member = source.find(["ratings.dat"], primary=True, what="the ratings")
    inter = _read_split_ratings(
        source, member, "::", "UserID::MovieID::Rating::Timestamp", "utf-8", None, stats
    )
    item = _side_table(source, ["movies.dat"], "item", ML_ITEM_COLUMNS, _movies_dat, None, stats)
    return Parsed(inter, [item] if item else [], stats)


def parse_ml_csv(source: RawSource, stats: ReadStats) -> Parsed:
    """ml-20m / ml-25m: ``ratings.csv`` and ``movies.csv`` with headers, UTF-8."""
    member = source.find(["ratings.csv"], primary=True, what="the ratings")
    header = "userId,movieId,rating,timestamp"
    inter = _read_split_ratings(source, member, ",", header, "utf-8", header, stats)
    item = _side_table(source, ["movies.csv"], "item", ML_ITEM_COLUMNS, _movies_csv, "utf-8", stats)
    return Parsed(inter, [item] if item else [], stats)


def _json_object(text: str, where: str, lineno: int) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(
            where,
            lineno,
            f"not valid JSON ({exc.msg} at column {exc.colno})",
            "The file must hold one JSON object per line; download it again if it is truncated",
        ) from None
    if not isinstance(obj, dict):
        raise _fail(
            where, lineno, "expected a JSON object", "The file must hold one JSON object per line"
        )
    return obj


def _json_str(obj: dict, key: str, where: str, lineno: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(
            where,
            lineno,
            f"missing or empty string field {key!r}",
            "Is this the Yelp Open Dataset review file (yelp_academic_dataset_review.json)?",
        )
    return value


def _yelp_business(lines: Iterator[tuple[int, str]], where: str) -> Iterator[list[str]]:
    """``yelp_academic_dataset_business.json``: business_id, name, categories."""
    for lineno, text in lines:
        obj = _json_object(text, where, lineno)
        business = _json_str(obj, "business_id", where, lineno)
        categories = obj.get("categories") or ""
        if isinstance(categories, str):
            categories = categories.split(",")
        yield [
            business,
            _text_field(str(obj.get("name") or "")),
            _tokens(str(c) for c in categories),
        ]


def parse_yelp(source: RawSource, stats: ReadStats) -> Parsed:
    """Yelp Open Dataset: review JSON lines (user_id, business_id, stars, date) + optional business file."""
    member = source.find(["yelp_academic_dataset_review.json"], primary=True, what="the reviews")
    where = member.display
    buf = InteractionBuffer(where, has_rating=True, has_time=True)
    add = buf.adder()
    for lineno, text in _text_lines(source, member, "utf-8", stats):
        obj = _json_object(text, where, lineno)
        user = _json_str(obj, "user_id", where, lineno)
        item = _json_str(obj, "business_id", where, lineno)
        date = _json_str(obj, "date", where, lineno)
        stars = obj.get("stars")
        if isinstance(stars, bool) or not isinstance(stars, (int, float)):
            raise _fail(
                where, lineno, f"field 'stars' is {stars!r}, not a number", "Fix or remove the line"
            )
        try:
            stamp = parse_datetime(date)
        except ValueError:
            raise _fail(
                where,
                lineno,
                f"date {date!r} is not a 'YYYY-MM-DD HH:MM:SS' date",
                "Fix or remove the line",
            ) from None
        add(user, item, float(stars), stamp, lineno)
    item_table = _side_table(
        source,
        ["yelp_academic_dataset_business.json"],
        "item",
        ["item_id:token", "item_name:token_seq", "categories:token_seq"],
        _yelp_business,
        "utf-8",
        stats,
    )
    return Parsed(buf, [item_table] if item_table else [], stats)


def parse_gowalla(source: RawSource, stats: ReadStats) -> Parsed:
    """SNAP Gowalla: ``user<TAB>time<TAB>latitude<TAB>longitude<TAB>location id``.

    The location's coordinates (first check-in seen) go to the ``.item`` file.
    """
    member = source.find(["loc-gowalla_totalCheckins.txt"], primary=True, what="the check-ins")
    where = member.display
    buf = InteractionBuffer(where, has_rating=False, has_time=True)
    add = buf.adder()
    lat, lon = array("d"), array("d")
    items = buf.items
    for lineno, text in _text_lines(source, member, "utf-8", stats):
        parts = text.split("\t")
        if len(parts) != 5:
            raise _wrong_fields(
                where,
                lineno,
                text,
                "5 tab-separated fields user, time, latitude, longitude, location",
                len(parts),
            )
        user, when, la, lo, location = parts
        try:
            stamp = parse_datetime(when)
        except ValueError:
            raise _fail(
                where,
                lineno,
                f"check-in time {when!r} is not like 2010-10-19T23:55:27Z",
                "Fix or remove the line",
            ) from None
        add(user, location, 0.0, stamp, lineno)
        if len(items.names) > len(lat):
            lat.append(_number(la, "latitude", where, lineno))
            lon.append(_number(lo, "longitude", where, lineno))

    def rows() -> Iterator[list[str]]:
        for name, la_, lo_ in zip(items.names, lat, lon, strict=True):
            yield [name, repr(la_), repr(lo_)]

    table = Features("item", ["item_id:token", "latitude:float", "longitude:float"], rows(), where)
    return Parsed(buf, [table], stats)


@dataclass(frozen=True)
class GenericOptions:
    """Column choices for ``generic``: names (with a header) or 0-based indexes."""

    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    rating_col: str | None = None
    sep: str | None = None
    header: bool = True
    encoding: str = "utf-8"


def _guess_sep(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return ","
    if name.endswith((".tsv", ".txt", ".tab")):
        return "\t"
    raise _fail(
        str(path),
        None,
        "cannot guess the column separator from the file name",
        "Pass --sep (e.g. --sep ',' or --sep '\\t')",
    )


def _unescape_sep(sep: str) -> str:
    return {"\\t": "\t", "tab": "\t", "comma": ",", "space": " ", "\\s": " "}.get(sep, sep)


def _column_index(spec: str, header: list[str] | None, flag: str, where: str) -> int:
    """Resolve a column given by name (header) or 0-based index."""
    if header is not None and spec in header:
        return header.index(spec)
    if spec.isdigit():
        return int(spec)
    if header is None:
        raise _fail(
            where,
            None,
            f"{flag} {spec!r} is not a 0-based column number",
            "Without a header give columns by number",
        )
    raise _fail(
        where,
        1,
        f"the header has no column {spec!r} for {flag} (columns: {', '.join(header)})",
        f"Pass {flag} one of the header's names or a 0-based column number",
    )


def _split_rows(
    source: RawSource, member: Member, sep: str, encoding: str, stats: ReadStats
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)``; CSV quoting is honoured for one-character separators."""
    lines = _text_lines(source, member, encoding, stats)
    if len(sep) != 1:
        for lineno, text in lines:
            yield lineno, text.split(sep)
        return
    current = [0]

    def texts() -> Iterator[str]:
        for lineno, text in lines:
            current[0] = lineno
            yield text

    reader = csv.reader(texts(), delimiter=sep)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # e.g. a lone carriage return inside a line
            raise _fail(
                member.display,
                current[0],
                f"unreadable CSV line: {error}",
                "Fix the line's quoting or line ending",
            ) from None
        yield current[0], row


def parse_generic(source: RawSource, stats: ReadStats, options: GenericOptions) -> Parsed:
    """Any CSV/TSV file with user, item and optional time / rating columns."""
    if source.primary is None:
        raise _fail(
            str(source.raw),
            None,
            "generic needs a single CSV/TSV file",
            "Pass --raw the file itself (it may be gzip-compressed)",
        )
    if not options.user_col or not options.item_col:
        raise _fail(
            str(source.raw),
            None,
            "generic needs --user-col and --item-col",
            "Name the columns (or give 0-based numbers)",
        )
    member = source.find([], primary=True, what="the interactions")
    where = member.display
    sep = _unescape_sep(options.sep) if options.sep else _guess_sep(source.primary)
    rows = _split_rows(source, member, sep, options.encoding, stats)
    header: list[str] | None = None
    if options.header:
        header = next((row for _, row in rows), None)
        if header is None:
            raise _fail(
                where, None, "the file is empty (not even a header)", "Pass a non-empty data file"
            )
    specs = {"--user-col": options.user_col, "--item-col": options.item_col}
    if options.time_col:
        specs["--time-col"] = options.time_col
    if options.rating_col:
        specs["--rating-col"] = options.rating_col
    cols = {flag: _column_index(spec, header, flag, where) for flag, spec in specs.items()}
    ui, ii = cols["--user-col"], cols["--item-col"]
    ti, ri = cols.get("--time-col"), cols.get("--rating-col")
    need = max(cols.values()) + 1
    buf = InteractionBuffer(where, has_rating=ri is not None, has_time=ti is not None)
    add = buf.adder()
    for lineno, row in rows:
        if not row:
            stats.blank += 1
            continue
        if len(row) < need:
            flag = max(cols, key=cols.get)
            raise _fail(
                where,
                lineno,
                f"only {len(row)} field(s), but {flag} is column {cols[flag]} (0-based); separator {sep!r}",
                "The line is truncated or --sep is wrong; fix or remove the line",
            )
        stamp = 0.0
        if ti is not None:
            try:
                stamp = parse_time(row[ti])
            except ValueError:
                raise _fail(
                    where,
                    lineno,
                    f"time {row[ti]!r} is neither a number nor an ISO 8601 date-time",
                    "Fix or remove the line, or choose another --time-col",
                ) from None
        rating = 0.0 if ri is None else _number(row[ri], "rating", where, lineno)
        add(row[ui], row[ii], rating, stamp, lineno)
    return Parsed(buf, [], stats)


PARSERS: dict[str, Callable[[RawSource, ReadStats], Parsed]] = {
    "ml-100k": parse_ml_100k,
    "ml-1m": parse_ml_1m,
    "ml-10m": parse_ml_10m,
    "ml-20m": parse_ml_csv,
    "ml-25m": parse_ml_csv,
    "yelp": parse_yelp,
    "gowalla": parse_gowalla,
}


# --------------------------------------------------------------------------
# De-duplication and k-core filtering (numpy, vectorised)
# --------------------------------------------------------------------------


def dedup_keep_latest(
    user: np.ndarray, item: np.ndarray, time: np.ndarray, line: np.ndarray
) -> np.ndarray:
    """Indexes (in source order) of the kept interactions: per (user, item) the largest
    timestamp, and on a tie the last line."""
    if len(user) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((line, time, item, user))
    last = np.empty(len(order), dtype=bool)  # last of its (user, item) run in sorted order
    last[-1] = True
    sorted_key = user[order]
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=last[:-1])
    sorted_key = item[order]
    last[:-1] |= sorted_key[1:] != sorted_key[:-1]
    del sorted_key
    kept = order[last]
    del order, last
    kept.sort()
    return kept


def first_duplicate(user: np.ndarray, item: np.ndarray, line: np.ndarray) -> tuple[int, int] | None:
    """Line numbers ``(earlier, later)`` of the first repeated (user, item) pair, or ``None``."""
    order = np.lexsort((line, item, user))
    su, si = user[order], item[order]
    same = (su[1:] == su[:-1]) & (si[1:] == si[:-1])
    if not same.any():
        return None
    later = order[1:][same]
    j = int(later[np.argmin(line[later])])
    pos = int(np.nonzero(order == j)[0][0])
    return int(line[order[pos - 1]]), int(line[j])


def kcore_filter(user: np.ndarray, item: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Boolean mask of interactions surviving the iterative k-core, and the rounds used.

    Repeats dropping interactions of users and items with fewer than ``k``
    interactions until every remaining user and item has at least ``k``.
    """
    keep = np.ones(len(user), dtype=bool)
    if k <= 1:
        return keep, 0
    n_users = int(user.max()) + 1 if len(user) else 0
    n_items = int(item.max()) + 1 if len(item) else 0
    rounds = 0
    while True:
        u_count = np.bincount(user[keep], minlength=n_users)
        i_count = np.bincount(item[keep], minlength=n_items)
        bad = keep & ((u_count[user] < k) | (i_count[item] < k))
        if not bad.any():
            return keep, rounds
        keep &= ~bad
        rounds += 1


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _cell(value: str) -> str:
    """Quote a cell the way pandas' CSV reader (used by RecBole) reads it back."""
    if any(c in value for c in '"\t\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _fmt(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def write_inter(path: Path, inter: InteractionBuffer, keep: np.ndarray) -> None:
    """Write the kept interactions (in source order) as a RecBole ``.inter`` file."""
    arrays = inter.arrays()
    columns = ["user_id:token", "item_id:token"]
    if inter.has_rating:
        columns.append("rating:float")
    if inter.has_time:
        columns.append("timestamp:float")
    users = [_cell(n) for n in inter.users.names]
    items = [_cell(n) for n in inter.items.names]
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\t".join(columns) + "\n")
        for start in range(0, len(keep), _CHUNK):
            sel = keep[start : start + _CHUNK]
            cols: list[Iterable[str]] = [
                [users[c] for c in arrays["user"][sel].tolist()],
                [items[c] for c in arrays["item"][sel].tolist()],
            ]
            if inter.has_rating:
                cols.append([_fmt(v) for v in arrays["rating"][sel].tolist()])
            if inter.has_time:
                cols.append([_fmt(v) for v in arrays["time"][sel].tolist()])
            fh.write("".join("\t".join(row) + "\n" for row in zip(*cols, strict=True)))


def write_features(path: Path, table: Features, wanted: set[str]) -> tuple[int, int, set[str]]:
    """Write the rows of ``table`` whose id is in ``wanted``.

    Returns (rows written, rows left out, ids written).  A repeated id keeps
    its first row.
    """
    written: set[str] = set()
    left_out = 0
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\t".join(table.columns) + "\n")
        for row in table.rows:
            if row[0] not in wanted or row[0] in written:
                left_out += 1
                continue
            written.add(row[0])
            fh.write("\t".join(_cell(v) for v in row) + "\n")
    return len(written), left_out, written


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_line(digest: str, name: str) -> str:
    """One line in ``sha256sum`` format (escaping names as GNU coreutils does)."""
    if "\\" in name or "\n" in name:
        return "\\" + digest + "  " + name.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{digest}  {name}\n"


def write_manifest(folder: Path, written: Sequence[Path], sources: Sequence[Path]) -> Path:
    """``MANIFEST.sha256``: written files by name, then raw sources by absolute path.

    Check it with ``cd DIR/DATASET && sha256sum -c MANIFEST.sha256``
    (add ``--ignore-missing`` once the raw files are gone).
    """
    path = folder / "MANIFEST.sha256"
    lines = [_manifest_line(sha256_file(p), p.name) for p in written]
    lines += [_manifest_line(sha256_file(p), str(p.resolve())) for p in sources]
    path.write_text("".join(lines), encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


@dataclass
class PrepareResult:
    """What :func:`prepare` wrote."""

    name: str
    folder: Path
    files: list[Path]
    n_users: int
    n_items: int
    n_interactions: int
    n_read: int
    n_duplicates: int
    n_kcore_removed: int

    @property
    def density(self) -> float:
        return (
            self.n_interactions / (self.n_users * self.n_items)
            if self.n_users and self.n_items
            else 0.0
        )

    def stats_line(self) -> str:
        """The line of the paper's Table 2, e.g. ``ml-1m: 6040 users, ... density 4.4684%``."""
        return (
            f"{self.name}: {self.n_users} users, {self.n_items} items, "
            f"{self.n_interactions} interactions, density {self.density:.4%}"
        )


def _check_name(name: str) -> str:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name != name.strip():
        raise PrepareError(
            f"invalid dataset name {name!r}: use a plain folder name such as 'ml-1m' (see --name)"
        )
    return name


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p``; returns the folders created, outermost first."""
    created = []
    for parent in [*reversed(path.parents), path]:
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    return created


def _select(
    parsed: Parsed, kcore: int, duplicates: str, name: str, log: Callable[[str], None]
) -> tuple[np.ndarray, int, int]:
    """Apply the duplicate policy and the k-core; returns (kept indexes, #duplicates, #k-core removed)."""
    inter = parsed.inter
    a = inter.arrays()
    if len(inter) == 0:
        raise _fail(
            inter.where, None, "the file holds no interactions", "Pass a non-empty data file"
        )
    if duplicates == "error":
        dup = first_duplicate(a["user"], a["item"], a["line"])
        if dup is not None:
            raise _fail(
                inter.where,
                dup[1],
                f"duplicated interaction: the same user and item as line {dup[0]}",
                "Remove the repeated line, or drop --duplicates error to keep the latest one",
            )
    keep = dedup_keep_latest(a["user"], a["item"], a["time"], a["line"])
    n_dup = len(inter) - len(keep)
    when = "largest timestamp, then last line" if inter.has_time else "no time column: last line"
    log(
        f"{name}: dropped {n_dup} duplicate (user, item) interaction(s) (policy: keep the latest; {when})"
    )
    removed = 0
    if kcore > 1:
        mask, rounds = kcore_filter(a["user"][keep], a["item"][keep], kcore)
        removed = int(len(keep) - mask.sum())
        keep = keep[mask]
        log(f"{name}: {kcore}-core filter removed {removed} interaction(s) in {rounds} round(s)")
        if len(keep) == 0:
            raise _fail(
                inter.where,
                None,
                f"no interaction is left after the {kcore}-core filter",
                "Use a smaller --kcore (0 disables it)",
            )
    return keep, n_dup, removed


def prepare(
    dataset: str,
    raw: str | os.PathLike[str],
    out: str | os.PathLike[str] = "dataset",
    *,
    name: str | None = None,
    kcore: int | None = None,
    overwrite: bool = False,
    duplicates: str = "latest",
    generic: GenericOptions | None = None,
    log: Callable[[str], None] = print,
) -> PrepareResult:
    """Convert ``raw`` into ``out/name/name.inter`` (+ ``.item``/``.user``) and a manifest.

    Raises :class:`PrepareError` for bad input; nothing is left in ``out``
    then (an existing data set folder is only replaced on success and with
    ``overwrite``).
    """
    if dataset not in DATASETS:
        raise PrepareError(f"unknown DATASET {dataset!r}: choose one of {', '.join(DATASETS)}")
    if duplicates not in DUPLICATE_POLICIES:
        raise PrepareError(
            f"unknown duplicate policy {duplicates!r}: choose one of {', '.join(DUPLICATE_POLICIES)}"
        )
    raw_path = Path(raw).expanduser()
    out_path = Path(out).expanduser()
    if name is None:
        name = raw_path.name.split(".")[0] if dataset == "generic" else dataset
    name = _check_name(name)
    kcore = DEFAULT_KCORE.get(dataset, 0) if kcore is None else kcore
    if kcore < 0:
        raise PrepareError(f"--kcore must be 0 (off) or a positive number, not {kcore}")
    if generic is not None and dataset != "generic" and generic != GenericOptions():
        raise PrepareError(
            "--user-col/--item-col/--time-col/--rating-col/--sep/--no-header/--encoding only apply to DATASET generic"
        )
    if generic is not None:
        try:
            codecs.lookup(generic.encoding)
        except LookupError:
            raise PrepareError(
                f"unknown --encoding {generic.encoding!r}: use e.g. utf-8 or latin-1"
            ) from None
    final = out_path / name
    _check_target(final, overwrite)

    stats = ReadStats()
    source = RawSource(raw_path, dataset)
    log(f"{name}: reading {raw_path} as {dataset}")
    if dataset == "generic":
        parsed = parse_generic(source, stats, generic or GenericOptions())
    else:
        parsed = PARSERS[dataset](source, stats)
    if stats.blank:
        log(f"{name}: skipped {stats.blank} blank line(s)")
    keep, n_dup, removed = _select(parsed, kcore, duplicates, name, log)
    inter = parsed.inter
    a = inter.arrays()
    user_codes = np.unique(a["user"][keep])
    item_codes = np.unique(a["item"][keep])
    _warn_na_ids(name, inter, user_codes, item_codes, log)

    created = _make_dirs(out_path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out_path))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
        files = [tmp / f"{name}.inter"]
        write_inter(files[0], inter, keep)
        for table in parsed.features:
            vocab = inter.users if table.suffix == "user" else inter.items
            codes = user_codes if table.suffix == "user" else item_codes
            wanted = {vocab.names[c] for c in codes.tolist()}
            path = tmp / f"{name}.{table.suffix}"
            n_rows, left_out, ids = write_features(path, table, wanted)
            files.append(path)
            note = (
                f"; {len(wanted) - len(ids)} {table.suffix}(s) have no row there"
                if len(ids) < len(wanted)
                else ""
            )
            log(
                f"{name}: {table.suffix} features: {n_rows} row(s), {left_out} row(s) without interactions left out{note}"
            )
        write_manifest(tmp, files, source.hashed)
        _move_into_place(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    written = [final / p.name for p in [*files, tmp / "MANIFEST.sha256"]]
    result = PrepareResult(
        name=name,
        folder=final,
        files=written,
        n_users=len(user_codes),
        n_items=len(item_codes),
        n_interactions=len(keep),
        n_read=len(inter),
        n_duplicates=n_dup,
        n_kcore_removed=removed,
    )
    log(f"{name}: wrote {', '.join(p.name for p in written)} to {final}")
    log(result.stats_line())
    return result


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_target(final: Path, overwrite: bool) -> None:
    if final.exists() and not final.is_dir():
        raise PrepareError(
            f"{final} exists and is not a folder: move it away or choose another --out/--name"
        )
    if final.exists() and not overwrite:
        raise PrepareError(
            f"{final} already exists: pass --overwrite to replace it, or choose another --out/--name"
        )


def _move_into_place(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename the finished temporary folder to ``final``, replacing an old one only with ``overwrite``."""
    _check_target(final, overwrite)
    if not final.exists():
        os.replace(tmp, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, old)  # a folder may replace an empty folder
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _warn_na_ids(
    name: str,
    inter: InteractionBuffer,
    user_codes: np.ndarray,
    item_codes: np.ndarray,
    log: Callable[[str], None],
) -> None:
    """Warn about ids that pandas (and so RecBole) would read as missing values."""
    bad = [inter.users.names[c] for c in user_codes.tolist() if inter.users.names[c] in _PANDAS_NA]
    bad += [inter.items.names[c] for c in item_codes.tolist() if inter.items.names[c] in _PANDAS_NA]
    if bad:
        log(
            f"{name}: warning: {len(bad)} id(s) such as {bad[0]!r} are read as missing values by pandas/RecBole"
        )


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_hdccf.prepare",
        description="Convert a raw data set into RecBole atomic files (see docs/data.md).",
    )
    parser.add_argument(
        "dataset", metavar="DATASET", choices=DATASETS, help="format: " + ", ".join(DATASETS)
    )
    parser.add_argument(
        "--raw", required=True, help="downloaded zip/tar, extracted folder, or the data file itself"
    )
    parser.add_argument(
        "--out", default="dataset", help="output folder, RecBole's data_path (default: dataset)"
    )
    parser.add_argument(
        "--name", help="output data set name (default: DATASET; generic: the file's name)"
    )
    parser.add_argument(
        "--kcore",
        type=int,
        help="iterative k-core: drop users/items with fewer interactions until stable; 0 disables "
        "(default: 10 for yelp and gowalla, 0 otherwise)",
    )
    parser.add_argument(
        "--duplicates",
        choices=DUPLICATE_POLICIES,
        default="latest",
        help="repeated (user, item): keep the latest (default) or stop with an error",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing OUT/NAME folder"
    )
    group = parser.add_argument_group("generic CSV/TSV")
    group.add_argument("--user-col", help="user column: header name or 0-based number")
    group.add_argument("--item-col", help="item column: header name or 0-based number")
    group.add_argument("--time-col", help="time column (seconds or ISO 8601 date-time), optional")
    group.add_argument("--rating-col", help="rating column, optional")
    group.add_argument(
        "--sep", help="separator (default from the extension: .csv ',', .tsv/.txt '\\t')"
    )
    group.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first line is a header",
    )
    group.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    generic = GenericOptions(
        user_col=args.user_col,
        item_col=args.item_col,
        time_col=args.time_col,
        rating_col=args.rating_col,
        sep=args.sep,
        header=args.header,
        encoding=args.encoding,
    )
    try:
        prepare(
            args.dataset,
            args.raw,
            args.out,
            name=args.name,
            kcore=args.kcore,
            overwrite=args.overwrite,
            duplicates=args.duplicates,
            generic=generic,
        )
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable raw files, a full disk, no write permission
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
