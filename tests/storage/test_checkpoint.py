"""Kafka's checkpoint text files: exact formats, round trips, strict reads, atomic writes."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kctl.errors import CorruptRecordError
from kctl.storage import checkpoint
from kctl.storage.checkpoint import (
    atomic_write,
    new_topic_id,
    parse_properties,
    read_leader_epoch_checkpoint,
    read_meta_properties,
    read_offsets_checkpoint,
    read_partition_metadata,
    write_leader_epoch_checkpoint,
    write_meta_properties,
    write_offsets_checkpoint,
    write_partition_metadata,
)

topics = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1, max_size=40)
offsets_maps = st.dictionaries(
    st.tuples(topics, st.integers(0, 10_000)), st.integers(-1, 2**63 - 1), max_size=30
)


def test_offsets_checkpoint_is_kafkas_format(tmp_path: Path) -> None:
    path = tmp_path / "replication-offset-checkpoint"
    write_offsets_checkpoint(path, {("orders", 1): 42, ("orders", 0): 7, ("audit.log", 12): 0})
    assert path.read_text() == "0\n3\naudit.log 12 0\norders 0 7\norders 1 42\n"
    assert read_offsets_checkpoint(path) == {("orders", 1): 42, ("orders", 0): 7, ("audit.log", 12): 0}


def test_reading_a_file_kafka_wrote(tmp_path: Path) -> None:
    path = tmp_path / "recovery-point-offset-checkpoint"
    path.write_text("0\n2\n__consumer_offsets 3 1200\nclicks 0 98765\n")
    assert read_offsets_checkpoint(path) == {("__consumer_offsets", 3): 1200, ("clicks", 0): 98765}


@settings(max_examples=60, deadline=None)
@given(offsets_maps)
def test_offsets_round_trip(tmp_path_factory: pytest.TempPathFactory, offsets: dict[tuple[str, int], int]) -> None:
    path = tmp_path_factory.mktemp("cp") / "log-start-offset-checkpoint"
    write_offsets_checkpoint(path, offsets)
    assert read_offsets_checkpoint(path) == offsets
    assert os.listdir(path.parent) == [path.name]


def test_missing_checkpoints_read_empty(tmp_path: Path) -> None:
    assert read_offsets_checkpoint(tmp_path / "nope") == {}
    assert read_leader_epoch_checkpoint(tmp_path / "nope") == []
    with pytest.raises(FileNotFoundError):
        read_meta_properties(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        read_partition_metadata(tmp_path / "nope")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "lines"),
        ("0\n", "lines"),
        ("1\n0\n", "version"),
        ("0\ntwo\n", "count"),
        ("0\n2\norders 0 7\n", "expected 2 entries, found 1"),  # truncated
        ("0\n1\norders 0 7\norders 1 8\n", "expected 1 entries, found 2"),
        ("0\n1\norders 0\n", "fields"),
        ("0\n1\norders 0 7 9\n", "fields"),
        ("0\n1\norders zero 7\n", "integer"),
        ("0\n1\norders 0 7.5\n", "integer"),
        ("0\n-1\n", "entries"),
        ("0\n2\norders 0 7\norders 0 8\n", "twice"),
    ],
)
def test_malformed_offsets_checkpoint(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "replication-offset-checkpoint"
    path.write_text(text)
    with pytest.raises(CorruptRecordError, match=problem) as raised:
        read_offsets_checkpoint(path)
    assert str(path) in str(raised.value)


def test_non_utf8_checkpoint_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "cp"
    path.write_bytes(b"0\n1\n\xff 0 1\n")
    with pytest.raises(CorruptRecordError, match="UTF-8"):
        read_offsets_checkpoint(path)


def test_write_offsets_rejects_unwritable_topic_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_offsets_checkpoint(tmp_path / "cp", {("two words", 0): 1})
    assert not (tmp_path / "cp").exists()


def test_leader_epoch_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "leader-epoch-checkpoint"
    write_leader_epoch_checkpoint(path, [(0, 0), (3, 120), (5, 4000)])
    assert path.read_text() == "0\n3\n0 0\n3 120\n5 4000\n"
    assert read_leader_epoch_checkpoint(path) == [(0, 0), (3, 120), (5, 4000)]
    write_leader_epoch_checkpoint(path, [])
    assert path.read_text() == "0\n0\n"
    assert read_leader_epoch_checkpoint(path) == []


@pytest.mark.parametrize("text", ["0\n2\n0 0\n", "0\n1\n0\n", "0\n1\n0 x\n", "2\n0\n", "0\n"])
def test_malformed_leader_epoch_checkpoint(tmp_path: Path, text: str) -> None:
    path = tmp_path / "leader-epoch-checkpoint"
    path.write_text(text)
    with pytest.raises(CorruptRecordError, match=re.escape(str(path))):
        read_leader_epoch_checkpoint(path)


# -- atomic_write -----------------------------------------------------------------------------
def test_atomic_write_replaces_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "state"
    atomic_write(path, "first")
    atomic_write(path, b"second")
    atomic_write(str(path), "third", fsync=False)
    assert path.read_text() == "third"
    assert sorted(os.listdir(tmp_path)) == ["state"]


def test_atomic_write_failure_keeps_the_old_file_and_removes_the_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state"
    atomic_write(path, "old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(checkpoint.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["state"]


def test_atomic_write_overwrites_a_stale_tmp(tmp_path: Path) -> None:
    path = tmp_path / "state"
    (tmp_path / "state.tmp").write_text("left by a crash, much longer than the new contents")
    atomic_write(path, "new")
    assert path.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["state"]


def test_atomic_write_large_payload(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    atomic_write(tmp_path / "big", data)
    assert (tmp_path / "big").read_bytes() == data


# -- meta.properties --------------------------------------------------------------------------
def test_meta_properties_is_kafkas_v0_format(tmp_path: Path) -> None:
    path = tmp_path / "meta.properties"
    write_meta_properties(path, broker_id=2, cluster_id="MkU3OEVBNTcwNTJENDM2Qg")
    lines = path.read_text().splitlines()
    assert lines[0] == "#"
    assert re.fullmatch(r"#\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2} UTC \d{4}", lines[1])
    assert lines[2:] == ["version=0", "broker.id=2", "cluster.id=MkU3OEVBNTcwNTJENDM2Qg"]
    assert read_meta_properties(path) == {
        "version": "0",
        "broker.id": "2",
        "cluster.id": "MkU3OEVBNTcwNTJENDM2Qg",
    }
    assert os.listdir(tmp_path) == ["meta.properties"]


def test_reading_a_meta_properties_kafka_wrote(tmp_path: Path) -> None:
    path = tmp_path / "meta.properties"
    path.write_text(
        "#\n#Tue Sep 10 10:52:18 UTC 2024\nnode.id=1\ndirectory.id=J8aAPcfLQt2bqs1JT_rMgQ\n"
        "version=1\ncluster.id=4L6g3nShT-eMCtK--X86sw\n"
    )
    assert read_meta_properties(path) == {
        "node.id": "1",
        "directory.id": "J8aAPcfLQt2bqs1JT_rMgQ",
        "version": "1",
        "cluster.id": "4L6g3nShT-eMCtK--X86sw",
    }


def test_java_properties_syntax() -> None:
    text = (
        "! bang comment\n"
        "  # indented comment\n"
        "a = b\n"
        "c:d\n"
        "e f\n"
        "g=\n"
        "h\n"
        "long = first \\\n"
        "       second\n"
        "path=C:\\\\dir\\\\file\n"
        "key\\=with\\:seps = v\\tx\n"
        "uni=\\u00e9\\ud83d\\ude00\n"
        "even=ends with two backslashes\\\\\n"
        "next=line\r\n"
        "ff=a\x0cb\n"
    )
    assert parse_properties(text) == {
        "a": "b",
        "c": "d",
        "e": "f",
        "g": "",
        "h": "",
        "long": "first second",
        "path": "C:\\dir\\file",
        "key=with:seps": "v\tx",
        "uni": "é😀",
        "even": "ends with two backslashes\\",
        "next": "line",
        "ff": "a\x0cb",
    }


@pytest.mark.parametrize("text", ["a=\\u12\n", "a=\\uXYZW\n", "a=\\ud83d\n"])
def test_malformed_properties_escape(text: str) -> None:
    with pytest.raises(CorruptRecordError, match=r"escape|surrogate"):
        parse_properties(text, "meta.properties")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=30), st.integers(0, 2**31 - 1))
def test_meta_properties_round_trip_any_cluster_id(
    tmp_path_factory: pytest.TempPathFactory, cluster_id: str, broker_id: int
) -> None:
    path = tmp_path_factory.mktemp("meta") / "meta.properties"
    write_meta_properties(path, broker_id=broker_id, cluster_id=cluster_id)
    assert read_meta_properties(path) == {"version": "0", "broker.id": str(broker_id), "cluster.id": cluster_id}


# -- partition.metadata -----------------------------------------------------------------------
def test_new_topic_id() -> None:
    ids = {new_topic_id() for _ in range(200)}
    assert len(ids) == 200
    for topic_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", topic_id)
        assert not topic_id.startswith("-")
        raw = base64.urlsafe_b64decode(topic_id + "==")
        assert len(raw) == 16 and raw[6] >> 4 == 4  # a version-4 uuid


def test_partition_metadata(tmp_path: Path) -> None:
    path = tmp_path / "partition.metadata"
    topic_id = new_topic_id()
    write_partition_metadata(path, topic_id)
    assert path.read_text() == f"version: 0\ntopic_id: {topic_id}\n"
    assert read_partition_metadata(path) == topic_id
    path.write_text("version: 0\ntopic_id: lNNnrPwqQtGe2z6sWqqpqg")  # Kafka's file has no final newline
    assert read_partition_metadata(path) == "lNNnrPwqQtGe2z6sWqqpqg"
    with pytest.raises(CorruptRecordError):
        write_partition_metadata(path, "too-short")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "version: 1\ntopic_id: lNNnrPwqQtGe2z6sWqqpqg\n",
        "version: 0\n",
        "version: 0\ntopic_id: lNNnrPwqQtGe2z6sWqqpq\n",
        "version: 0\ntopic_id: lNNnrPwqQtGe2z6sWqqp!g\n",
        "version 0\ntopic_id: lNNnrPwqQtGe2z6sWqqpqg\n",
    ],
)
def test_malformed_partition_metadata(tmp_path: Path, text: str) -> None:
    path = tmp_path / "partition.metadata"
    path.write_text(text)
    with pytest.raises(CorruptRecordError, match=re.escape(str(path))):
        read_partition_metadata(path)
