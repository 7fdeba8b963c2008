"""``kctl produce`` and ``kctl consume`` through the real CLI against one shared 3-broker cluster."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kctl.client.admin import Cluster
from kctl.client.partitioner import partition_for_key
from tests.conftest import FAST_SETTINGS, kill_everything, run_kctl

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    path = str(tmp_path_factory.mktemp("pc") / "cluster")
    c = Cluster.init(path, brokers=3, settings=FAST_SETTINGS)
    c.start()
    try:
        yield c
    finally:
        try:
            c.stop(timeout=10)
        finally:
            assert not kill_everything(path)


_n = iter(range(10_000))


def fresh_topic(c: Cluster, partitions: int = 1, **config: str) -> str:
    name = f"t{next(_n)}"
    c.create_topic(name, partitions=partitions, config={k.replace("_", "."): v for k, v in config.items()})
    return name


def k(c: Cluster, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return run_kctl(c.layout.root, *args, input=input, timeout=timeout)


def ok(res: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert res.returncode == 0, res.stderr.decode()
    return res


def error_line(res: subprocess.CompletedProcess[bytes]) -> str:
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1, res.stderr.decode()
    assert lines[0].startswith("kctl: error: "), lines[0]
    assert "Traceback" not in res.stderr.decode()
    return lines[0]


# -- round trips ------------------------------------------------------------------------------
def test_values_from_arguments_and_stdin(cluster):
    t = fresh_topic(cluster)
    ok(k(cluster, "produce", t, "alpha", "beta"))
    ok(k(cluster, "produce", t, input=b"gamma\ndelta\n"))
    assert ok(k(cluster, "consume", t, "-e")).stdout == b"alpha\nbeta\ngamma\ndelta\n"


def test_nul_delimiter_carries_newlines_and_binary(cluster):
    t = fresh_topic(cluster)
    values = [b"line one\nline two", b"\xff\xfe binary \x01", b"tab\tinside"]
    ok(k(cluster, "produce", t, "-D", "\\0", input=b"\0".join(values)))
    out = ok(k(cluster, "consume", t, "-e", "-f", "%s\\0")).stdout
    assert out.split(b"\0")[:-1] == values


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.none() | st.binary(max_size=40), st.none() | st.binary(max_size=200),
                          st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=3)),
                min_size=1, max_size=8))
def test_any_bytes_round_trip_through_the_json_envelope(cluster, records):
    from kctl.client.envelope import dumps_envelope

    t = fresh_topic(cluster)
    lines = "".join(dumps_envelope(t, None, None, None, key, value, headers) + "\n"
                    for key, value, headers in records).encode()
    ok(k(cluster, "produce", t, "--input", "json", "-p", "0", input=lines))
    out = ok(k(cluster, "-o", "json", "consume", t, "-e")).stdout.split(b"\n")
    got = [json.loads(line) for line in out if line]
    assert len(got) == len(records)
    from kctl.client.envelope import json_to_bytes

    for (key, value, headers), env in zip(records, got, strict=True):
        assert json_to_bytes(env["key"]) == key
        assert json_to_bytes(env["value"]) == value
        assert [(h[0], json_to_bytes(h[1])) for h in env["headers"]] == list(headers)
    assert [e["offset"] for e in got] == list(range(len(records)))


def test_consume_json_produces_back_unchanged(cluster):
    src = fresh_topic(cluster, partitions=2)
    dst = fresh_topic(cluster, partitions=2)
    ok(k(cluster, "produce", src, "-K", ":", "-H", "h=1", input=b"a:1\nb:2\nc:3\n\xff:\x00\n"))
    dumped = ok(k(cluster, "-o", "json", "consume", src, "-e")).stdout
    ok(k(cluster, "produce", dst, "--input", "json", input=dumped))
    again = ok(k(cluster, "-o", "json", "consume", dst, "-e")).stdout

    def strip(doc: bytes) -> list[tuple]:
        recs = [json.loads(x) for x in doc.decode().splitlines()]
        return sorted((r["partition"], r["offset"], json.dumps(r["key"]), json.dumps(r["value"]),
                       json.dumps(r["headers"]), r["timestamp"]) for r in recs)

    assert strip(dumped) == strip(again)
    first = json.loads(dumped.decode().splitlines()[0])
    assert set(first) == {"topic", "partition", "offset", "timestamp", "key", "value", "headers"}
    keys = {json.dumps(json.loads(x)["key"]) for x in dumped.decode().splitlines()}
    assert json.dumps({"base64": base64.b64encode(b"\xff").decode()}) in keys


# -- keys, partitioner, headers, tombstones ---------------------------------------------------
def test_keyed_records_land_where_kafkas_partitioner_puts_them(cluster):
    t = fresh_topic(cluster, partitions=5)
    keys = [f"key-{i}".encode() for i in range(40)]
    ok(k(cluster, "produce", t, "-K", "=", input=b"".join(key + b"=v\n" for key in keys)))
    out = ok(k(cluster, "consume", t, "-e", "-f", "%p %k\\n")).stdout.decode().split("\n")
    placed = {line.split()[1].encode(): int(line.split()[0]) for line in out if line}
    assert placed == {key: partition_for_key(key, 5) for key in keys}


def test_unkeyed_records_use_a_sticky_partition_per_batch(cluster):
    t = fresh_topic(cluster, partitions=4)
    res = ok(k(cluster, "produce", t, "--print-offsets", input=b"".join(b"v%d\n" % i for i in range(50))))
    parts = {line.split(b"\t")[1] for line in res.stdout.splitlines()}
    assert len(parts) == 1  # one small batch: one partition


def test_null_empty_makes_tombstones_and_null_keys(cluster):
    t = fresh_topic(cluster)
    ok(k(cluster, "produce", t, "-Z", "-K", ":", input=b"k1:\n:v2\nk3:v3\n"))
    got = [json.loads(x) for x in ok(k(cluster, "-o", "json", "consume", t, "-e")).stdout.decode().splitlines()]
    assert [(g["key"], g["value"]) for g in got] == [("k1", None), (None, "v2"), ("k3", "v3")]


def test_every_format_token(cluster):
    t = fresh_topic(cluster)
    ok(k(cluster, "produce", t, "-k", "kk", "-H", "a=1", "-H", "a=2", "v"))
    rec = json.loads(ok(k(cluster, "-o", "json", "consume", t, "-e")).stdout)
    out = ok(k(cluster, "consume", t, "-e", "-f", "%t|%p|%o|%k|%s|%T|%h|%K|%S|%%\\t\\n")).stdout
    assert out == f"{t}|0|0|kk|v|{rec['timestamp']}|a=1,a=2|2|1|%\t\n".encode()
    assert rec["headers"] == [["a", "1"], ["a", "2"]]


# -- offsets ----------------------------------------------------------------------------------
def test_every_offset_spec(cluster):
    t = fresh_topic(cluster)
    ok(k(cluster, "produce", t, input=b"".join(b"%d\n" % i for i in range(10))))
    time.sleep(0.05)
    mark = int(time.time() * 1000)
    time.sleep(0.05)
    ok(k(cluster, "produce", t, input=b"10\n11\n"))

    def read(*args: str) -> list[int]:
        return [int(x) for x in ok(k(cluster, "consume", t, "-e", *args)).stdout.split()]

    assert read("-o", "beginning") == list(range(12))
    assert read("--from-beginning") == list(range(12))
    assert read("-o", "end") == []
    assert read("-o", "7") == [7, 8, 9, 10, 11]
    assert read("-o", "-3") == [9, 10, 11]
    assert read("-o", f"@{mark}") == [10, 11]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(mark / 1000)) + f".{mark % 1000:03d}Z"
    assert read("-o", f"@{iso}") == [10, 11]
    assert read("-n", "4") == [0, 1, 2, 3]


def test_exit_at_end_on_empty_and_non_empty_topics(cluster):
    t = fresh_topic(cluster, partitions=3)
    res = k(cluster, "consume", t, "-e", timeout=20)
    assert res.returncode == 0 and res.stdout == b""
    ok(k(cluster, "produce", t, "x"))
    assert ok(k(cluster, "consume", t, "-e", timeout=20)).stdout == b"x\n"


def test_follow_mode_sees_new_records_quickly(cluster):
    t = fresh_topic(cluster)
    proc = subprocess.Popen([sys.executable, "-m", "kctl", "--data-dir", cluster.layout.root, "consume", t, "-n", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        start = time.monotonic()
        ok(k(cluster, "produce", t, "hello"))
        out, _err = proc.communicate(timeout=20)
        assert out == b"hello\n"
        assert proc.returncode == 0
        assert time.monotonic() - start < 5
    finally:
        proc.kill()
        proc.wait()


def test_head_ends_quietly(cluster):
    t = fresh_topic(cluster)
    ok(k(cluster, "produce", t, input=b"".join(b"%d\n" % i for i in range(5000))))
    # a following consumer must notice that its reader went away even with nothing more to write
    res = subprocess.run(f"{sys.executable} -m kctl --data-dir {cluster.layout.root} consume {t} | head -n 3",
                         shell=True, capture_output=True, timeout=30)
    assert res.stdout == b"0\n1\n2\n"
    assert b"Traceback" not in res.stderr and b"error" not in res.stderr


# -- errors -----------------------------------------------------------------------------------
def test_unknown_topic_is_a_clear_error(cluster):
    res = k(cluster, "produce", "no-such-topic", "x")
    assert res.returncode == 1
    assert "does not exist" in error_line(res)
    res = k(cluster, "consume", "no-such-topic", "-e")
    assert res.returncode == 1
    assert "does not exist" in error_line(res)


def test_bad_partition_and_bad_offsets(cluster):
    t = fresh_topic(cluster, partitions=2)
    res = k(cluster, "produce", t, "-p", "7", "x")
    assert res.returncode == 1 and "no partition 7" in error_line(res)
    res = k(cluster, "consume", t, "-p", "9", "-e")
    assert res.returncode == 1 and "no partition 9" in error_line(res)
    for bad in ("soon", "@yesterday", "1.5", "--"):
        res = k(cluster, "consume", t, "-e", "-o", bad)
        assert res.returncode == 2, (bad, res.stderr)
        error_line(res)
    res = k(cluster, "consume", t, "-o", "json")
    assert res.returncode == 2 and "kctl -o json consume" in error_line(res)


def test_oversized_record_is_refused_and_nothing_else_is_lost(cluster):
    t = fresh_topic(cluster, max_message_bytes="2000")
    big = b"x" * 5000
    res = k(cluster, "produce", t, input=b"small1\n" + big + b"\nsmall2\n")
    assert res.returncode == 1
    assert "max.message.bytes" in error_line(res)
    assert ok(k(cluster, "consume", t, "-e")).stdout == b"small1\nsmall2\n"


def test_print_offsets_json_lines(cluster):
    t = fresh_topic(cluster)
    res = ok(k(cluster, "-o", "json", "produce", t, "--print-offsets", "a", "b"))
    docs = [json.loads(x) for x in res.stdout.decode().splitlines()]
    assert [(d["topic"], d["partition"], d["offset"]) for d in docs] == [(t, 0, 0), (t, 0, 1)]
    assert all(isinstance(d["timestamp"], int) for d in docs)


def test_compression_codecs_round_trip(cluster):
    pytest.importorskip("cramjam")
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        t = fresh_topic(cluster)
        ok(k(cluster, "produce", t, "--compression", codec, input=b"".join(b"r%d\n" % i for i in range(300))))
        out = ok(k(cluster, "consume", t, "-e")).stdout.split()
        assert out == [b"r%d" % i for i in range(300)], codec
