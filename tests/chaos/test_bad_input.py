"""Bad input never does damage: every command with malformed arguments, illegal names, wrong
types, missing or foreign data directories, damaged files, and locks held by someone else.

For each case: exactly one ``kctl: error:`` line on stderr, never a traceback, the documented
exit code (2 usage, 1 failed, 3 unavailable), no file created outside the data directory (the
commands run in an empty working directory that must stay empty), and the cluster unchanged
(its file listing and its metadata compared before and after).

Most cases run the real command in this process (``kctl.cli.run``), which is what the ``kctl``
entry point calls; the lock cases run it as a subprocess with a deadline, since a hang is what
they look for. Tests run as root here, so ``chmod 000`` proves nothing: unreadable files are
simulated by a directory where a file is expected.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FAST_SETTINGS, kill_everything, run_kctl

pytestmark = pytest.mark.e2e

USAGE, FAILED, UNAVAILABLE = 2, 1, 3
VOLATILE_SUFFIXES = (".tmp", ".log", ".lock", "replica.state", "-checkpoint", ".index", ".timeindex")


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One started 3-broker cluster with topic ``orders`` (3 partitions, RF 3) holding records."""
    from kctl.client.admin import Cluster
    from kctl.client.producer import Producer

    root = tmp_path_factory.mktemp("bad-input")
    data_dir = str(root / "cluster")
    c = Cluster.init(data_dir, brokers=3, settings=dict(FAST_SETTINGS))
    try:
        c.start(timeout=30)
        c.create_topic("orders", 3, 3, {"min.insync.replicas": 2})
        with Producer(data_dir, acks="all") as p:
            for i in range(30):
                p.send("orders", f"v{i}".encode(), partition=i % 3)
        yield c
    finally:
        try:
            c.stop(timeout=15)
        finally:
            kill_everything(data_dir)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``cli(*args, stdin=...)``: the real command in this process, run in an empty directory."""
    from kctl.cli import run

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("KCTL_DEBUG", raising=False)
    monkeypatch.delenv("KCTL_DATA_DIR", raising=False)
    monkeypatch.setenv("COLUMNS", "200")

    def call(*args: str, stdin: str = "") -> Ran:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8"))
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        assert os.listdir(cwd) == [], f"kctl {' '.join(args)} created {os.listdir(cwd)} in the working directory"
        return Ran(code, captured.out, captured.err)

    return call


def snapshot(data_dir: str) -> tuple[set[str], bytes, list[str]]:
    """What a failed command must not change: the files (volatile broker files aside), the
    metadata document and the topics and groups it names."""
    paths = set()
    for dirpath, _dirs, files in os.walk(data_dir):
        for name in files:
            if not name.endswith(VOLATILE_SUFFIXES) and not name.startswith("."):
                paths.add(os.path.relpath(os.path.join(dirpath, name), data_dir))
    for dirpath, dirs, _files in os.walk(data_dir):
        for name in dirs:
            paths.add(os.path.relpath(os.path.join(dirpath, name), data_dir) + "/")
    with open(os.path.join(data_dir, "metadata", "cluster-metadata.json"), "rb") as f:
        md = f.read()
    groups = sorted(os.listdir(os.path.join(data_dir, "groups")))
    return paths, md, groups


def assert_one_error_line(r: Ran, args: tuple[str, ...]) -> None:
    cmd = "kctl " + " ".join(args)
    assert "Traceback" not in r.err and "Traceback" not in r.out, f"{cmd}: traceback\n{r.err}"
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kctl: error:"), f"{cmd}: stderr is not one error line: {r.err!r}"


# -- malformed arguments against a running cluster --------------------------------------------------------
LONG = "x" * 250
CASES: list[tuple[tuple[str, ...], set[int]]] = [
    # illegal topic names (Kafka's rules): always a usage error, never a path
    (("topic", "create", "../x"), {USAGE}),
    (("topic", "create", "a/b"), {USAGE}),
    (("topic", "create", LONG), {USAGE}),
    (("topic", "create", "tópico"), {USAGE}),
    (("topic", "create", "名前"), {USAGE}),
    (("topic", "create", "."), {USAGE}),
    (("topic", "create", ".."), {USAGE}),
    (("topic", "create", ""), {USAGE}),
    (("topic", "create", "a b"), {USAGE}),
    (("topic", "create", "nul\x01"), {USAGE}),
    (("topic", "describe", "../x"), {USAGE}),
    (("topic", "delete", "../orders"), {USAGE}),
    (("topic", "alter", "/etc", "--partitions", "5"), {USAGE}),
    (("produce", "../x", "v"), {USAGE}),
    (("produce", LONG, "v"), {USAGE}),
    (("consume", "../x", "-e"), {USAGE}),
    (("consume", "a/b", "-e"), {USAGE}),
    (("log", "dump", "../x:0"), {USAGE}),
    (("describe", "ü"), {USAGE}),
    # wrong types and values
    (("topic", "create", "ok1", "-p", "zero"), {USAGE}),
    (("topic", "create", "ok1", "-p", "0"), {USAGE, FAILED}),
    (("topic", "create", "ok1", "-p", "-3"), {USAGE, FAILED}),
    (("topic", "create", "ok1", "-p", "999999999999"), {USAGE, FAILED}),
    (("topic", "create", "ok1", "-r", "9"), {USAGE, FAILED}),
    (("topic", "create", "ok1", "-r", "0"), {USAGE, FAILED}),
    (("topic", "create", "ok1", "-c", "nope=1"), {USAGE}),
    (("topic", "create", "ok1", "-c", "retention.ms=abc"), {USAGE}),
    (("topic", "create", "ok1", "-c", "novalue"), {USAGE}),
    (("topic", "create", "ok1", "-c", "min.insync.replicas=5"), {USAGE}),
    (("topic", "create", "ok1", "-c", "cleanup.policy=shred"), {USAGE}),
    (("topic", "create", "ok1", "-c", "segment.bytes=1"), {USAGE}),
    (("topic", "create", "orders"), {FAILED}),
    (("topic", "alter", "orders", "--partitions", "1"), {USAGE, FAILED}),
    (("topic", "alter", "orders", "--partitions", "x"), {USAGE}),
    (("topic", "alter", "orders", "-c", "nope=1"), {USAGE}),
    (("topic", "alter", "orders", "--delete-config", "nope"), {USAGE, FAILED}),
    (("topic", "alter", "nope", "--partitions", "4"), {FAILED}),
    (("topic", "describe", "nope"), {FAILED}),
    (("topic", "delete", "nope"), {FAILED}),
    (("topic", "create"), {USAGE}),
    (("topic", "create", "ok1", "--bogus"), {USAGE}),
    (("produce", "nope", "v"), {FAILED}),
    (("produce", "orders", "-p", "99", "v"), {USAGE, FAILED}),
    (("produce", "orders", "-p", "-1", "v"), {USAGE, FAILED}),
    (("produce", "orders", "-p", "x", "v"), {USAGE}),
    (("produce", "orders", "--acks", "2", "v"), {USAGE}),
    (("produce", "orders", "--compression", "brotli", "v"), {USAGE}),
    (("produce", "orders", "--input", "xml", "v"), {USAGE}),
    (("produce", "orders", "-H", "noequals", "v"), {USAGE}),
    (("produce", "orders", "--timeout", "soon", "v"), {USAGE}),
    (("consume", "nope", "-e"), {FAILED}),
    (("consume", "orders", "-o", "yesterday", "-e"), {USAGE}),
    (("consume", "orders", "-o", "@not-a-date", "-e"), {USAGE}),
    (("consume", "orders", "-p", "99", "-e"), {USAGE, FAILED}),
    (("consume", "orders", "-n", "many", "-e"), {USAGE}),
    (("consume", "orders", "-g", "../g", "-e"), {USAGE}),
    (("consume", "orders", "-g", "a/b", "-e"), {USAGE}),
    (("consume", "orders", "-g", "g1", "--assignor", "magic", "-e"), {USAGE}),
    (("consume", "orders", "-g", "g2", "--reset", "middle", "-e"), {USAGE}),
    (("consume", "orders", "-o", "stored", "-e"), {USAGE, FAILED}),
    (("consume",), {USAGE}),
    (("group", "describe", "nope"), {FAILED}),
    (("group", "describe", "../g"), {USAGE}),
    (("group", "delete", "../../etc"), {USAGE}),
    (("group", "delete", "nope"), {FAILED}),
    (("group", "reset-offsets", "g", "--topic", "orders"), {USAGE}),
    (("group", "reset-offsets", "g", "--topic", "orders", "--to-offset", "x"), {USAGE}),
    (("group", "reset-offsets", "g", "--topic", "../x", "--to-earliest"), {USAGE}),
    (("broker", "start", "99"), {USAGE, FAILED}),
    (("broker", "start", "x"), {USAGE}),
    (("broker", "stop", "99"), {USAGE, FAILED}),
    (("broker", "kill", "99"), {USAGE, FAILED}),
    (("broker", "kill", "-1"), {USAGE, FAILED}),
    (("elect", "--type", "dirty"), {USAGE}),
    (("elect", "nope:0"), {FAILED}),
    (("elect", "orders:x"), {USAGE}),
    (("elect", "orders:99"), {USAGE, FAILED}),
    (("elect", "../x"), {USAGE}),
    (("events", "-n", "x"), {USAGE}),
    (("log", "dump", "orders"), {USAGE}),
    (("log", "dump", "orders:99"), {USAGE, FAILED}),
    (("log", "dump", "orders:0", "--broker", "99"), {USAGE, FAILED}),
    (("log", "dump", "nope:0"), {FAILED}),
    (("cluster", "init"), {FAILED}),
    (("cluster", "init", "--brokers", "0"), {USAGE}),
    (("cluster", "init", "--brokers", "x"), {USAGE}),
    (("cluster", "destroy"), {USAGE}),
    (("cluster", "destroy", "--yes"), {FAILED}),  # brokers are running: refused, nothing removed
    (("-o", "yaml", "topic", "list"), {USAGE}),
    (("nosuchcommand",), {USAGE}),
    (("topic", "nosuchsub"), {USAGE}),
    (("perf", "produce", "orders", "--records", "x"), {USAGE}),
    (("watch", "--once", "--interval", "soon"), {USAGE}),
]


@pytest.mark.parametrize(("args", "codes"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_malformed_arguments(cluster, cli, args: tuple[str, ...], codes: set[int]) -> None:  # type: ignore[no-untyped-def]
    data_dir = cluster.layout.root
    before = snapshot(data_dir)
    r = cli("--data-dir", data_dir, *args)
    assert r.code in codes, f"kctl {' '.join(args)}: exit {r.code}, expected {sorted(codes)}: {r.err!r}"
    assert_one_error_line(r, args)
    after = snapshot(data_dir)
    assert after[0] == before[0], f"files changed: +{after[0] - before[0]} -{before[0] - after[0]}"
    assert after[1] == before[1], "the metadata changed"
    assert after[2] == before[2], "the groups changed"
    assert sorted(os.listdir(os.path.dirname(data_dir))) == ["cluster"], "a file appeared next to the data directory"


def test_produce_json_garbage_on_stdin(cluster, cli) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(cluster.layout.root)
    hw_before = [p.high_watermark for p in cluster.describe(["orders"])[0]["partitions"]]
    for stdin in ("not json\n", '{"value": 5}\n', '[1, 2]\n', '{"value": {"base64": "!!"}}\n'):
        r = cli("--data-dir", cluster.layout.root, "produce", "orders", "--input", "json", stdin=stdin)
        assert r.code in (USAGE, FAILED), (stdin, r)
        assert_one_error_line(r, ("produce", "--input", "json"))
    assert snapshot(cluster.layout.root) == before
    assert [p.high_watermark for p in cluster.describe(["orders"])[0]["partitions"]] == hw_before


# -- data directories that are missing, foreign or damaged ------------------------------------------------
COMMANDS_ON_A_DIRECTORY: list[tuple[str, ...]] = [
    ("topic", "list"), ("topic", "create", "t"), ("describe",), ("cluster", "status"), ("cluster", "start"),
    ("cluster", "stop"), ("cluster", "destroy", "--yes"), ("broker", "start", "0"), ("broker", "kill", "0"),
    ("produce", "t", "v"), ("consume", "t", "-e"), ("consume", "t", "-g", "g", "-e"), ("group", "list"),
    ("group", "describe", "g"), ("events",), ("log", "verify"), ("log", "dump", "t:0"), ("elect",),
    ("watch", "--once"),
]


def _tree(path: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, files in os.walk(path):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), path) + "/"] = None
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), path)] = f.read()
    return out


@pytest.mark.parametrize("args", COMMANDS_ON_A_DIRECTORY, ids=[" ".join(a) for a in COMMANDS_ON_A_DIRECTORY])
def test_missing_data_directory(cli, tmp_path: Path, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nowhere" / "cluster"
    r = cli("--data-dir", str(missing), *args)
    assert r.code == UNAVAILABLE, (args, r)
    assert_one_error_line(r, args)
    assert not (tmp_path / "nowhere").exists(), "a command created the missing data directory"


@pytest.mark.parametrize("args", COMMANDS_ON_A_DIRECTORY, ids=[" ".join(a) for a in COMMANDS_ON_A_DIRECTORY])
def test_foreign_data_directory(cli, tmp_path: Path, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    foreign = tmp_path / "home"
    (foreign / "docs").mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine\n")
    (foreign / "docs" / "a.json").write_text('{"cluster_id": "x"}')
    (foreign / "metadata").mkdir()  # looks a little like a cluster, but is not one
    before = _tree(foreign)
    r = cli("--data-dir", str(foreign), *args)
    assert r.code in (UNAVAILABLE, FAILED), (args, r)
    assert_one_error_line(r, args)
    assert _tree(foreign) == before, "a command changed a directory that holds no cluster"


def test_data_dir_is_a_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "plain-file"
    f.write_text("hello\n")
    for args in COMMANDS_ON_A_DIRECTORY:
        r = cli("--data-dir", str(f), *args)
        assert r.code in (UNAVAILABLE, FAILED), (args, r)
        assert_one_error_line(r, args)
        assert f.read_text() == "hello\n"


@pytest.fixture
def stopped_copy(cluster, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    """A copy of the shared cluster's files, with no broker running on it."""
    dst = str(tmp_path / "copy")
    shutil.copytree(cluster.layout.root, dst, ignore=shutil.ignore_patterns("*.tmp"))
    return dst


READ_COMMANDS: list[tuple[str, ...]] = [
    ("topic", "list"), ("describe",), ("cluster", "status"), ("group", "list"), ("events", "-n", "3"),
    ("log", "verify"), ("consume", "orders", "-e"), ("produce", "orders", "v", "--timeout", "1"),
]


@pytest.mark.parametrize("damage", ["cluster.json garbage", "cluster.json is a directory",
                                    "metadata is a directory", "metadata garbage", "metadata missing",
                                    "meta.properties is a directory"])
def test_damaged_cluster_files(cli, stopped_copy: str, damage: str) -> None:  # type: ignore[no-untyped-def]
    """Unreadable or damaged files (a directory where a file is expected stands in for
    ``chmod 000``, which root ignores): one error line, exit 1 or 3, nothing written."""
    root = Path(stopped_copy)
    md = root / "metadata" / "cluster-metadata.json"
    if damage == "cluster.json garbage":
        (root / "cluster.json").write_bytes(b"\x00\xffnot json")
    elif damage == "cluster.json is a directory":
        (root / "cluster.json").unlink()
        (root / "cluster.json").mkdir()
    elif damage == "metadata is a directory":
        md.unlink()
        md.mkdir()
    elif damage == "metadata garbage":
        md.write_bytes(b'{"version": 3, "topics": [')
    elif damage == "metadata missing":
        md.unlink()
    else:
        p = root / "brokers" / "broker-0" / "meta.properties"
        p.unlink()
        p.mkdir()
    before = _tree(root)
    for args in READ_COMMANDS:
        r = cli("--data-dir", stopped_copy, *args)
        assert "Traceback" not in r.err, (damage, args, r)
        if args[0] == "events" and damage.startswith("metadata"):
            assert r.code == 0, r  # the history lives in events.jsonl, not in the metadata document
            continue
        if args[0] == "log" and damage.startswith("metadata"):
            # verify reports a damaged metadata document as damage: its normal report, exit 1
            assert r.code == FAILED and "cluster-metadata.json" in r.err, r
            continue
        if damage == "meta.properties is a directory":
            if args[0] == "log":  # verify reports it as damage (its normal report, exit 1)
                assert r.code == FAILED and "meta.properties" in r.err, r
            continue  # only brokers and verify read meta.properties
        assert r.code in (UNAVAILABLE, FAILED), (damage, args, r)
        assert_one_error_line(r, args)
    assert _tree(root) == before


def test_broker_start_with_damaged_meta_properties(stopped_copy: str) -> None:
    """A broker whose meta.properties cannot be read refuses to start, with one error line."""
    p = Path(stopped_copy) / "brokers" / "broker-1" / "meta.properties"
    p.unlink()
    p.mkdir()
    try:
        r = run_kctl(stopped_copy, "broker", "start", "1", timeout=60)
        err = r.stderr.decode()
        assert r.returncode in (FAILED, UNAVAILABLE), err
        assert "Traceback" not in err
        assert [line for line in err.splitlines() if line.strip()][-1].startswith("kctl: error:"), err
    finally:
        kill_everything(stopped_copy)


def test_chmod_000_is_not_testable_as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("not root: chmod 000 would work, but the directory-as-file cases above cover the same paths")
    pytest.skip("tests run as root, which reads files whatever their mode; unreadable files are simulated "
                "by a directory where a file is expected (test_damaged_cluster_files)")


# -- locks held by someone else -----------------------------------------------------------------------------
def _hold_flock(path: str) -> subprocess.Popen[bytes]:
    """Another process (say, another user's) holding an exclusive flock on ``path``."""
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"held"
    return p


def _release(p: subprocess.Popen[bytes]) -> None:
    p.kill()
    p.wait()


def test_held_append_lock_times_out_with_a_clear_error(cluster) -> None:  # type: ignore[no-untyped-def]
    part = cluster.metadata().topic("orders").partitions[0]
    lock = cluster.layout.append_lock(part.leader, "orders", 0)
    before = cluster.partition("orders", 0).log_end
    holder = _hold_flock(lock)
    try:
        t0 = time.monotonic()
        r = run_kctl(cluster.layout.root, "produce", "orders", "-p", "0", "--timeout", "2", "stuck", timeout=60)
        took = time.monotonic() - t0
    finally:
        _release(holder)
    err = r.stderr.decode()
    assert r.returncode == FAILED, err
    assert took < 20, f"produce waited {took:.1f}s on a held append lock with --timeout 2"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kctl: error:") and "lock" in lines[0], err
    assert cluster.partition("orders", 0).log_end == before  # nothing was written


@pytest.mark.slow
@pytest.mark.parametrize(("args", "lock"), [
    (("topic", "create", "blocked"), "metadata/metadata.lock"),
    (("topic", "alter", "orders", "-c", "retention.ms=1000"), "metadata/metadata.lock"),
    (("elect", "--type", "preferred"), "metadata/metadata.lock"),
    (("group", "reset-offsets", "held", "--topic", "orders", "--to-earliest", "--execute"), "groups/held/group.lock"),
])
def test_held_critical_section_locks_time_out(stopped_copy: str, args: tuple[str, ...], lock: str) -> None:
    """A command blocked by a lock someone else holds gives up after its timeout (30 s) with one
    clear error line, and changes nothing. (Run on a stopped copy: no broker needs the lock.)"""
    path = os.path.join(stopped_copy, lock)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    before = _tree(Path(stopped_copy))
    holder = _hold_flock(path)
    try:
        t0 = time.monotonic()
        r = run_kctl(stopped_copy, *args, timeout=120)
        took = time.monotonic() - t0
    finally:
        _release(holder)
    err = r.stderr.decode()
    assert r.returncode in (FAILED, UNAVAILABLE), (r.returncode, err)
    assert took < 60, took
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kctl: error:"), err
    after = _tree(Path(stopped_copy))

    def kept(tree: dict[str, bytes | None]) -> set[str]:  # the group's own directories may appear
        return {k for k in tree if not k.endswith(".lock") and not k.startswith("groups/held/")}

    assert kept(after) == kept(before)


# -- the record-batch reader on random bytes ---------------------------------------------------------------
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=600), state=st.binary(min_size=0, max_size=256),
       recover=st.booleans(), indexes=st.booleans())
def test_recovery_and_reader_over_random_segment_files(tmp_path_factory, data: bytes, state: bytes,
                                                       recover: bool, indexes: bool) -> None:  # type: ignore[no-untyped-def]
    """A replica directory holding random bytes as its segment (and random replica.state):
    opening it recovers or refuses with CorruptRecordError, and reading it serves only whole
    batches with valid CRCs. Never another exception."""
    from kctl.errors import CorruptRecordError
    from kctl.storage.log import Log, LogReader
    from kctl.storage.records import decode_batch
    from kctl.storage.verify import verify_replica

    d = tmp_path_factory.mktemp("fuzz")
    (d / "00000000000000000000.log").write_bytes(data)
    if indexes:
        (d / "00000000000000000000.index").write_bytes(data[:64])
        (d / "00000000000000000000.timeindex").write_bytes(data[-72:])
    if state:
        (d / "replica.state").write_bytes(state)
    verify_replica(str(d))  # reports; never raises
    try:
        Log.open(str(d), recover=recover).close()
    except CorruptRecordError:
        return
    try:
        with LogReader(str(d)) as reader:
            end = reader.log_end().log_end_offset
            reader.seek(reader.log_end().log_start_offset)
            for _ in range(100):
                chunk, headers = reader.read(end)
                if not headers:
                    break
                for pos, _h in headers:
                    decode_batch(chunk, pos)
    except CorruptRecordError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2000), st.binary(min_size=1, max_size=8)), max_size=6))
def test_valid_segment_with_random_damage_reads_a_valid_prefix(tmp_path_factory, flips) -> None:  # type: ignore[no-untyped-def]
    """A real segment with random bytes overwritten: recovery keeps a prefix of the records that
    were written, in order; every record served decodes with a valid CRC."""
    from kctl.storage.log import Log, LogConfig, LogReader
    from kctl.storage.records import decode_batch, encode_batch

    d = str(tmp_path_factory.mktemp("fuzzlog"))
    written = []
    with Log.create(d, LogConfig()) as log:
        for i in range(20):
            vals = [f"r{i}-{k}".encode() for k in range(3)]
            written += vals
            log.append(encode_batch(vals, timestamp=1_700_000_000_000), leader_epoch=i // 7)
    seg = os.path.join(d, "00000000000000000000.log")
    raw = bytearray(Path(seg).read_bytes())
    for pos, junk in flips:
        pos %= len(raw)
        raw[pos:pos + len(junk)] = junk[: len(raw) - pos]
    with open(seg, "wb") as f:
        f.write(bytes(raw))
    Log.open(d, recover=True).close()
    got = []
    with LogReader(d) as reader:
        end = reader.log_end().log_end_offset
        reader.seek(0)
        while True:
            chunk, headers = reader.read(end)
            if not headers:
                break
            for p, _h in headers:
                got += [r.value for r in decode_batch(chunk, p)[1]]
    assert got == written[: len(got)]


def test_verify_reports_a_missing_index(tmp_path: Path) -> None:
    """(Found by this suite: verify_replica used to raise FileNotFoundError here.)"""
    from kctl.storage.log import Log
    from kctl.storage.records import encode_batch
    from kctl.storage.verify import verify_replica

    d = str(tmp_path / "r")
    with Log.create(d) as log:
        for _ in range(3):
            log.append(encode_batch([b"x" * 3000]), leader_epoch=0)
    os.unlink(os.path.join(d, "00000000000000000000.index"))
    problems = verify_replica(d)
    assert any(p.path.endswith(".index") for p in problems)


def test_no_lock_file_blocks_a_read(cluster) -> None:  # type: ignore[no-untyped-def]
    """Readers take no lock: with the metadata lock held by someone else, describe still answers."""
    holder = _hold_flock(cluster.layout.metadata_lock)
    try:
        r = run_kctl(cluster.layout.root, "describe", "orders", timeout=30)
    finally:
        _release(holder)
    assert r.returncode == 0, r.stderr
    assert b"orders" in r.stdout


def test_flock_helper_really_excludes(tmp_path: Path) -> None:
    path = str(tmp_path / "x.lock")
    holder = _hold_flock(path)
    try:
        fd = os.open(path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    finally:
        _release(holder)
