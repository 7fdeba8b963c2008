"""The cluster, broker, topic and log commands through the real CLI, against real brokers."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.conftest import _pids_using

pytestmark = pytest.mark.e2e


def snapshot(root: str) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime: proves a command changed nothing."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


def one_error_line(res) -> str:
    err = res.stderr.decode()
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kctl: error: "), err
    return lines[0]


def assert_all_stopped(c) -> None:
    from kctl.cluster.locks import is_held

    assert not _pids_using(c.layout.root), "a process outlived cluster stop"
    for b in c.broker_ids:
        assert not is_held(c.layout.broker_lock(b)), f"broker {b}'s lock is still held"
    assert not is_held(c.layout.controller_lock)


def start_stop_cycles(c, kctl, cycles: int) -> None:
    for i in range(cycles):
        res = kctl("-o", "json", "cluster", "start")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["controller"] in c.broker_ids
        status = json.loads(kctl("-o", "json", "cluster", "status").stdout)
        assert [b["state"] for b in status["brokers"]] == ["up"] * len(c.broker_ids), status
        assert status["controller"] in c.broker_ids
        res = kctl("cluster", "stop")
        assert res.returncode == 0, res.stderr
        assert_all_stopped(c)
        if i == 0:
            # starting what already runs is a no-op; stopping what is stopped too
            assert kctl("cluster", "stop").returncode == 0


def test_start_stop_cycles_leave_no_process_or_lock(make_cluster, kctl):
    c = make_cluster(brokers=3, start=False)
    start_stop_cycles(c, kctl, 3)
    # the data survived every cycle and the cluster still works
    assert kctl("cluster", "start").returncode == 0
    assert kctl("cluster", "start").returncode == 0  # idempotent
    assert kctl("topic", "create", "after", "-p", "2").returncode == 0
    assert kctl("produce", "after", "-k", "k", "x").returncode == 0
    assert kctl("consume", "after", "-e").stdout == b"x\n"


@pytest.mark.slow
def test_twenty_start_stop_cycles(make_cluster, kctl):
    c = make_cluster(brokers=3, start=False)
    c.start()
    c.create_topic("kept", 3)
    c.stop()
    start_stop_cycles(c, kctl, 20)
    assert kctl("cluster", "start").returncode == 0
    assert [t["topic"] for t in c.topics()] == ["kept"]


ILLEGAL_NAMES = ["../x", "a/b", "x" * 250, ".", "..", "caf\u00e9", "", "a b", "/tmp/x", "x\n"]


def test_illegal_topic_names_are_refused_and_create_nothing(make_cluster, kctl, tmp_path, capsys):
    from kctl.cli import run

    # brokers stopped: nothing but the commands themselves can touch the directory
    c = make_cluster(brokers=1, start=False)
    version = c.metadata().version
    before = set(snapshot(str(tmp_path)))

    def in_process(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = run(["--data-dir", c.layout.root, *args])
        return code, capsys.readouterr().err

    for name in ILLEGAL_NAMES:
        for cmd in (["topic", "create", name], ["topic", "create", "--", name], ["topic", "delete", name],
                    ["topic", "describe", name], ["produce", name, "v"], ["consume", name, "-e"]):
            code, err = in_process(*cmd)
            assert code == 2, (cmd, err)
            assert err.startswith("kctl: error: ") and err.count("\n") == 1, (cmd, err)
    # and once through a real process: exit status and a single line
    res = kctl("topic", "create", "../escape")
    assert res.returncode == 2 and "illegal topic name" in one_error_line(res)
    assert set(snapshot(str(tmp_path))) == before, "a refused name left something on disk"
    assert c.metadata().version == version and c.topics() == []


def test_topic_commands_validate_grow_describe_and_delete(make_cluster, kctl):
    c = make_cluster(brokers=3)
    res = kctl("topic", "create", "big", "-r", "4")
    assert res.returncode == 1
    assert "replication factor 4 is larger than the number of brokers (3)" in one_error_line(res)
    res = kctl("topic", "create", "t", "-p", "0")
    assert res.returncode in (1, 2) and "partitions" in one_error_line(res)
    assert kctl("topic", "create", "t.1", "-p", "3", "-r", "2", "-c", "retention.ms=60000").returncode == 0
    res = kctl("topic", "create", "t_1")
    assert res.returncode == 1 and "collides" in one_error_line(res)
    res = kctl("topic", "create", "t.1")
    assert res.returncode == 1 and "already exists" in one_error_line(res)
    assert kctl("topic", "create", "t.1", "--if-not-exists").returncode == 0

    # partitions only grow
    res = kctl("topic", "alter", "t.1", "--partitions", "2")
    assert res.returncode == 1 and "only grow" in one_error_line(res)
    assert kctl("topic", "alter", "t.1", "--partitions", "5").returncode == 0

    doc = json.loads(kctl("-o", "json", "topic", "describe", "t.1").stdout)
    assert set(doc) >= {"topics"} and len(doc["topics"]) == 1
    topic = doc["topics"][0]
    assert set(topic) >= {"topic", "partitions", "config"}
    assert topic["topic"] == "t.1" and topic["config"] == {"retention.ms": 60000}
    assert [p["partition"] for p in topic["partitions"]] == [0, 1, 2, 3, 4]
    for p in topic["partitions"]:
        assert set(p) >= {"partition", "leader", "replicas", "isr", "leader_epoch", "log_start",
                          "high_watermark", "log_end"}
        assert len(p["replicas"]) == 2 and len(set(p["replicas"])) == 2
        assert p["leader"] == p["replicas"][0] and sorted(p["isr"]) == sorted(p["replicas"])
        assert all(isinstance(p[k], int) for k in ("leader_epoch", "log_start", "high_watermark", "log_end"))
        for b in p["replicas"]:
            assert os.path.isdir(c.layout.replica_dir(b, "t.1", p["partition"]))
    leaders = [p["leader"] for p in topic["partitions"]]
    assert max(leaders.count(b) for b in range(3)) - min(leaders.count(b) for b in range(3)) <= 1
    listed = json.loads(kctl("-o", "json", "topic", "list").stdout)
    assert {"topic": "t.1", "partitions": 5, "replication_factor": 2} in listed["topics"]
    status = json.loads(kctl("-o", "json", "cluster", "status").stdout)
    assert set(status) >= {"cluster_id", "controller", "brokers"}
    assert [set(b) >= {"id", "state", "pid", "leaders", "replicas"} for b in status["brokers"]] == [True] * 3
    assert sum(b["leaders"] for b in status["brokers"]) == 5
    assert sum(b["replicas"] for b in status["brokers"]) == 10

    plain = kctl("topic", "describe", "t.1").stdout.decode().splitlines()
    assert plain[0].split("\t") == ["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "LEADER-EPOCH",
                                    "LOG-START", "HIGH-WATERMARK", "LOG-END"]
    assert len(plain) == 6

    assert kctl("produce", "t.1", "-p", "4", "a", "b").returncode == 0
    assert kctl("topic", "delete", "t.1").returncode == 0
    for b in c.broker_ids:
        left = [n for n in os.listdir(c.layout.broker_dir(b)) if n.startswith("t.1-")]
        assert left == [], f"broker {b} still has {left}"
    res = kctl("topic", "describe", "t.1")
    assert res.returncode == 1 and "does not exist" in one_error_line(res)
    assert json.loads(kctl("-o", "json", "topic", "list").stdout) == {"topics": []}
    # a new topic of the same name starts empty
    assert kctl("topic", "create", "t.1", "-p", "5").returncode == 0
    assert kctl("consume", "t.1", "-e").stdout == b""


def test_log_verify_finds_a_flipped_byte(make_cluster, kctl):
    c = make_cluster(brokers=3)
    assert kctl("topic", "create", "v", "-p", "2").returncode == 0
    lines = b"".join(b"record-%d\n" % i for i in range(300))
    assert kctl("produce", "v", "-p", "0", input=lines).returncode == 0
    c.stop()
    res = kctl("log", "verify")
    assert res.returncode == 0, res.stderr
    assert "6 replica(s) checked" in res.stderr.decode()

    seg = os.path.join(c.layout.replica_dir(1, "v", 0), f"{0:020d}.log")
    size = os.path.getsize(seg)
    assert size > 200
    with open(seg, "r+b") as f:
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    res = kctl("-o", "json", "log", "verify")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and {p["path"] for p in doc["problems"]} == {seg}
    assert any(re.search("crc", p["message"], re.I) for p in doc["problems"]), doc

    with open(seg, "r+b") as f:
        f.seek(size // 2)
        f.write(byte)
    assert kctl("log", "verify").returncode == 0
