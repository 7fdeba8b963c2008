"""Kafka's small text files: offset checkpoints, the leader-epoch cache, meta.properties and
partition.metadata, each written crash-atomically.

Formats (as a Kafka broker writes them, so its tools read ours and ours read theirs):

- offsets checkpoints (``recovery-point-offset-checkpoint``, ``replication-offset-checkpoint``,
  ``log-start-offset-checkpoint``): a version line ``0``, a count line, then one
  ``topic partition offset`` line per partition.
- ``leader-epoch-checkpoint``: a version line ``0``, a count line, then ``epoch startOffset`` lines.
- ``meta.properties``: Java properties, v0: ``version=0``, ``broker.id``, ``cluster.id``.
- ``partition.metadata``: ``version: 0`` then ``topic_id: <22-char url-safe base64 uuid>``.

Readers are strict: a file that is truncated or malformed raises CorruptRecordError naming the
path, and callers fall back (e.g. recover from the log instead of trusting a recovery point).
A missing offsets or leader-epoch checkpoint reads as empty, as in Kafka; a missing
``meta.properties`` or ``partition.metadata`` raises FileNotFoundError (the directory is new).

Concurrency contract: none of these functions lock. Writers hold whatever lock guards the file;
``atomic_write`` makes each update all-or-nothing for readers and across crashes.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping, Sequence

from kctl.errors import CorruptRecordError

CHECKPOINT_VERSION = 0
TMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` all at once.

    Writes ``<path>.tmp``, fsyncs it, renames it over ``path`` and fsyncs the directory, so a
    reader sees the old or the new contents and a crash at any point leaves one of the two (plus,
    at worst, a stray ``.tmp`` that the next write overwrites). ``fsync=False`` keeps the atomic
    rename but skips both fsyncs (for files that are rebuilt after a crash anyway).
    """
    target = os.fspath(path)
    tmp = target + TMP_SUFFIX
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        _fsync_directory(os.path.dirname(os.path.abspath(target)))


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lines(text: str) -> list[str]:
    """Split lines as Java's readers do: at \\n, \\r or \\r\\n only (not str.splitlines' extras)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def _corrupt(path: str | os.PathLike[str], problem: str) -> CorruptRecordError:
    return CorruptRecordError(f"checkpoint file {os.fspath(path)} is malformed: {problem}")


def _read_text(path: str | os.PathLike[str]) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise _corrupt(path, "not UTF-8 text") from None


def _read_entries(path: str | os.PathLike[str], fields: int) -> list[list[str]] | None:
    """The entry lines (split into ``fields`` words) of a versioned, counted checkpoint."""
    text = _read_text(path)
    if text is None:
        return None
    if text and not text.endswith("\n"):
        # every checkpoint we write ends in a newline: without it the last line may be cut
        # inside a number and still parse (a torn write, never a complete file)
        raise _corrupt(path, "it does not end in a newline (a torn write)")
    lines = _lines(text)
    if len(lines) < 2:
        raise _corrupt(path, f"{len(lines)} lines, a checkpoint has at least a version and a count")
    version, count_line = lines[0].strip(), lines[1].strip()
    if version != str(CHECKPOINT_VERSION):
        raise _corrupt(path, f"version {version!r}, expected {CHECKPOINT_VERSION}")
    try:
        expected = int(count_line)
    except ValueError:
        raise _corrupt(path, f"entry count {count_line!r} is not a number") from None
    entries = [line.split() for line in lines[2:] if line.strip()]
    if len(entries) != expected or expected < 0:
        raise _corrupt(path, f"expected {expected} entries, found {len(entries)}")
    for number, words in enumerate(entries, start=3):
        if len(words) != fields:
            raise _corrupt(path, f"line {number} has {len(words)} fields, expected {fields}")
    return entries


def _to_int(path: str | os.PathLike[str], word: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise _corrupt(path, f"{word!r} is not an integer") from None


def _checkpoint_text(lines: Sequence[str]) -> str:
    return "".join(f"{line}\n" for line in (str(CHECKPOINT_VERSION), str(len(lines)), *lines))


# -- offsets checkpoints ----------------------------------------------------------------------
def read_offsets_checkpoint(path: str | os.PathLike[str]) -> dict[tuple[str, int], int]:
    """``{(topic, partition): offset}`` from a Kafka offsets checkpoint; ``{}`` if missing."""
    entries = _read_entries(path, 3)
    if entries is None:
        return {}
    offsets = {}
    for topic, partition, offset in entries:
        offsets[(topic, _to_int(path, partition))] = _to_int(path, offset)
    if len(offsets) != len(entries):
        raise _corrupt(path, "a partition is listed twice")
    return offsets


def write_offsets_checkpoint(path: str | os.PathLike[str], offsets: Mapping[tuple[str, int], int]) -> None:
    """Atomically write ``{(topic, partition): offset}`` in Kafka's format (sorted, for diffs)."""
    lines = []
    for (topic, partition), offset in sorted(offsets.items()):
        if not topic or any(char.isspace() for char in topic):
            raise ValueError(f"topic name {topic!r} cannot be written to a checkpoint")
        lines.append(f"{topic} {int(partition)} {int(offset)}")
    atomic_write(path, _checkpoint_text(lines))


# -- leader-epoch checkpoint ------------------------------------------------------------------
def read_leader_epoch_checkpoint(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """``[(epoch, start_offset), ...]`` in file order; ``[]`` if missing."""
    entries = _read_entries(path, 2)
    if entries is None:
        return []
    pairs = [(_to_int(path, epoch), _to_int(path, start)) for epoch, start in entries]
    for (e1, s1), (e2, s2) in itertools.pairwise(pairs):
        if not (e2 > e1 and s2 >= s1):
            raise _corrupt(path, f"entries ({e1}, {s1}) and ({e2}, {s2}) do not increase")
    return pairs


def write_leader_epoch_checkpoint(path: str | os.PathLike[str], entries: Sequence[tuple[int, int]]) -> None:
    """Atomically write ``(epoch, start_offset)`` pairs in Kafka's format."""
    atomic_write(path, _checkpoint_text([f"{int(epoch)} {int(start)}" for epoch, start in entries]))


# -- meta.properties --------------------------------------------------------------------------
def write_meta_properties(path: str | os.PathLike[str], *, broker_id: int, cluster_id: str) -> None:
    """Atomically write a v0 ``meta.properties`` as Kafka's ``Properties.store`` does."""
    stamp = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    properties = {"version": "0", "broker.id": str(int(broker_id)), "cluster.id": cluster_id}
    body = "".join(f"{_escape(key)}={_escape(value)}\n" for key, value in properties.items())
    atomic_write(path, f"#\n#{stamp}\n{body}")


def read_meta_properties(path: str | os.PathLike[str]) -> dict[str, str]:
    """All properties of a ``meta.properties`` file; FileNotFoundError if there is none."""
    text = _read_text(path)
    if text is None:
        raise FileNotFoundError(f"no meta.properties at {os.fspath(path)}")
    return parse_properties(text, os.fspath(path))


def _escape(text: str) -> str:
    out = []
    for index, char in enumerate(text):
        if char in "\\=:#!" or (char == " " and index == 0):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif not (" " <= char <= "~"):
            out.append("".join(f"\\u{unit:04x}" for unit in _utf16_units(char)))
        else:
            out.append(char)
    return "".join(out)


def _utf16_units(char: str) -> list[int]:
    encoded = char.encode("utf-16-be")
    return [int.from_bytes(encoded[i : i + 2], "big") for i in range(0, len(encoded), 2)]


def parse_properties(text: str, source: str = "<properties>") -> dict[str, str]:
    """Parse Java ``.properties`` text (comments, ``=``/``:``/space separators, escapes,
    continuation lines). Malformed escapes raise CorruptRecordError naming ``source``."""
    logical: list[str] = []
    pending = ""
    for raw in _lines(text):
        line = raw.lstrip(" \t\f")
        if not pending and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending += line[:-1]
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    properties: dict[str, str] = {}
    for line in logical:
        # the key ends at the first unescaped separator: '=', ':' or whitespace
        index = 0
        while index < len(line) and line[index] not in "=: \t\f":
            index += 2 if line[index] == "\\" else 1
        key = line[: min(index, len(line))]
        has_separator = index < len(line) and line[index] in "=:"
        index += 1
        # the value starts after whitespace and at most one '=' or ':'
        while index < len(line):
            char = line[index]
            if char in " \t\f":
                index += 1
            elif char in "=:" and not has_separator:
                has_separator = True
                index += 1
            else:
                break
        properties[_unescape(key, source)] = _unescape(line[index:], source)
    return properties


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str, source: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        escaped = text[index + 1 : index + 2]
        if escaped == "u":
            digits = text[index + 2 : index + 6]
            if len(digits) != 4 or not all(digit in _HEX_DIGITS for digit in digits):
                raise CorruptRecordError(f"{source}: malformed \\u escape {digits!r}")
            out.append(chr(int(digits, 16)))
            index += 6
        else:
            out.append(_SIMPLE_ESCAPES.get(escaped, escaped))
            index += 2
    result = "".join(out)
    if "\\u" in text:
        # \u escapes of a UTF-16 surrogate pair make one character
        try:
            result = result.encode("utf-16-be", "surrogatepass").decode("utf-16-be")
        except UnicodeDecodeError:
            raise CorruptRecordError(f"{source}: \\u escapes form an unpaired surrogate") from None
    return result


# -- partition.metadata -----------------------------------------------------------------------
def new_topic_id() -> str:
    """A random topic id as Kafka prints it: 22 chars of url-safe base64, never starting with '-'."""
    import base64
    import uuid

    while True:
        topic_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not topic_id.startswith("-"):
            return topic_id


def write_partition_metadata(path: str | os.PathLike[str], topic_id: str) -> None:
    """Atomically write ``partition.metadata`` (version 0) for ``topic_id``."""
    _check_topic_id(topic_id, os.fspath(path))
    atomic_write(path, f"version: {CHECKPOINT_VERSION}\ntopic_id: {topic_id}\n")


def read_partition_metadata(path: str | os.PathLike[str]) -> str:
    """The topic id in ``partition.metadata``; FileNotFoundError if there is none."""
    text = _read_text(path)
    if text is None:
        raise FileNotFoundError(f"no partition metadata at {os.fspath(path)}")
    fields: dict[str, str] = {}
    for line in _lines(text):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise _corrupt(path, f"line {line!r} is not 'key: value'")
        fields[key.strip()] = value.strip()
    if fields.get("version") != str(CHECKPOINT_VERSION):
        raise _corrupt(path, f"version {fields.get('version')!r}, expected {CHECKPOINT_VERSION}")
    topic_id = fields.get("topic_id")
    if topic_id is None:
        raise _corrupt(path, "no topic_id line")
    _check_topic_id(topic_id, os.fspath(path))
    return topic_id


def _check_topic_id(topic_id: str, path: str) -> None:
    import base64
    import binascii

    try:
        decoded = base64.urlsafe_b64decode(topic_id + "==")
    except (binascii.Error, ValueError):
        decoded = b""
    if len(topic_id) != 22 or len(decoded) != 16 or not topic_id.isascii():
        raise _corrupt(path, f"topic id {topic_id!r} is not 22 chars of url-safe base64")
