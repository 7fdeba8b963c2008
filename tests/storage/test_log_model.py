"""A stateful model test: Log against a plain list of records.

Hypothesis drives leader appends, follower appends, rolls, truncations, retention and reopening
(clean and with recovery) on a log with tiny segments and a tiny index interval, and after every
step checks the log against the model: every record read back through a LogReader, the log start
and end offsets, the leader-epoch cache, offset_for_timestamp and verify_replica.
"""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kctl.errors import OffsetOutOfRangeError
from kctl.storage.log import Log, LogConfig, LogReader
from kctl.storage.records import decode_batch, encode_batch
from kctl.storage.verify import verify_replica
from tests.storage.log_helpers import Rec, read_all

KEYS = st.one_of(st.none(), st.binary(max_size=6))
VALUES = st.one_of(st.none(), st.binary(max_size=40))
HEADERS = st.lists(st.tuples(st.text(max_size=4), st.one_of(st.none(), st.binary(max_size=4))), max_size=2)
RECORDS = st.lists(st.tuples(KEYS, VALUES, HEADERS, st.integers(0, 60)), min_size=1, max_size=12)


def _config() -> LogConfig:
    return LogConfig(segment_bytes=700, index_interval_bytes=120, retention_ms=-1, retention_bytes=-1)


class LogModel(RuleBasedStateMachine):
    """The model: records by offset, the log start and end, the leader-epoch cache."""

    @initialize()
    def start(self) -> None:
        self.root = tempfile.mkdtemp(prefix="kctl-model-")
        self.directory = self.root + "/t-0"
        self.log = Log.create(self.directory, _config())
        self.records: list[Rec] = []
        self.log_start = 0
        self.log_end = 0
        self.epochs: list[tuple[int, int]] = []
        self.leader_epoch = 0
        self.clock = 1_000_000
        self.tailer = LogReader(self.directory)
        self.tailer.seek(0)

    def teardown(self) -> None:
        if hasattr(self, "log"):
            self.log.close()
            self.tailer.close()
            shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------
    def _encode(self, rows: list[tuple], base_offset: int = 0, epoch: int = -1) -> tuple[bytes, list[Rec]]:
        self.clock += 100
        keys = [r[0] for r in rows]
        values = [r[1] for r in rows]
        headers = [tuple(r[2]) for r in rows]
        timestamps = [self.clock + r[3] for r in rows]
        data = encode_batch(values, keys=keys, headers=headers, timestamps=timestamps,
                            base_offset=base_offset, partition_leader_epoch=epoch)
        recs = [Rec(base_offset + i, timestamps[i], keys[i], values[i],
                    tuple((n, v) for n, v in headers[i])) for i in range(len(rows))]
        return data, recs

    def _assign_epoch(self, epoch: int, start: int) -> None:
        if epoch >= 0 and (not self.epochs or epoch > self.epochs[-1][0]):
            self.epochs.append((epoch, start))

    def _next_epoch(self, bump: int) -> int:
        """Leader epochs only go up over the life of a partition (a new leader, a new epoch),
        whatever truncation did to the log."""
        self.leader_epoch += bump
        return self.leader_epoch

    def _batch_bases(self) -> list[int]:
        """Base offsets of the batches in the log, from a scan."""
        bases = []
        with LogReader(self.directory) as reader:
            reader.seek(reader.log_end().log_start_offset)
            while True:
                _chunk, headers = reader.read(1 << 62)
                if not headers:
                    return bases
                bases.extend(h.base_offset for _p, h in headers)

    # -- rules ------------------------------------------------------------------------------
    @rule(rows=RECORDS, bump=st.integers(0, 2))
    def append(self, rows: list[tuple], bump: int) -> None:
        epoch = self._next_epoch(bump)
        base = self.log_end
        data, recs = self._encode(rows, base_offset=base)
        info = self.log.append(data, leader_epoch=epoch)
        assert (info.base_offset, info.last_offset) == (base, base + len(rows) - 1)
        self.records.extend(recs)
        self.log_end = base + len(rows)
        self._assign_epoch(epoch, base)

    @rule(batches=st.lists(st.tuples(RECORDS, st.integers(0, 2)), min_size=1, max_size=4))
    def append_replicated(self, batches: list[tuple[list[tuple], int]]) -> None:
        chunk = b""
        offset = self.log_end
        for rows, bump in batches:
            epoch = self._next_epoch(bump)
            data, recs = self._encode(rows, base_offset=offset, epoch=epoch)
            chunk += data
            self.records.extend(recs)
            self._assign_epoch(epoch, offset)
            offset += len(rows)
        assert self.log.append_replicated(chunk) == offset
        self.log_end = offset

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule(data=st.data())
    def truncate_to(self, data: st.DataObject) -> None:
        target = data.draw(st.integers(self.log_start - 2, self.log_end + 2), label="target")
        bases = self._batch_bases()
        self.log.truncate_to(target)
        if target >= self.log_end:
            return
        # a batch that straddles the target goes as a whole; if that is the batch holding the
        # log start, the log is left empty there
        cut = max(b for b in bases if b <= target) if target > self.log_start else target
        if cut <= self.log_start:
            self._reset(self.log_start)
            return
        self.records = [r for r in self.records if r.offset < cut]
        self.log_end = cut
        self.epochs = [(e, s) for (e, s) in self.epochs if s < cut]

    def _reset(self, start: int) -> None:
        self.records = []
        self.log_start = self.log_end = start
        self.epochs = []

    @rule(delta=st.integers(-3, 40))
    def truncate_fully(self, delta: int) -> None:
        start = max(0, self.log_end + delta)
        self.log.truncate_fully(start)
        self._reset(start)

    @rule(data=st.data())
    def delete_segments_below(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.log_start, self.log_end + 3), label="offset")
        before = self.log.segment_bases
        deleted = self.log.delete_segments_below(offset)
        after = self.log.segment_bases
        assert before[: len(deleted)] == deleted and after == before[len(deleted):]
        self._advance_start(min(offset, self.log_end))
        assert all(b <= self.log_start for b in deleted)

    def _advance_start(self, start: int) -> None:
        if start <= self.log_start:
            return
        self.log_start = start
        kept = []
        for i, (e, s) in enumerate(self.epochs):
            nxt = self.epochs[i + 1][1] if i + 1 < len(self.epochs) else None
            if nxt is not None and nxt <= start:
                continue
            kept.append((e, max(s, start)))
        # an epoch that covers no offset any more (the log start reached the log end) goes
        self.epochs = [(e, s) for (e, s) in kept if s < self.log_end]

    @rule(retention_bytes=st.integers(0, 3000), hw_back=st.integers(0, 20))
    def delete_retained_by_size(self, retention_bytes: int, hw_back: int) -> None:
        hw = max(self.log_start, self.log_end - hw_back)
        bases = self.log.segment_bases
        size = self.log.size_in_bytes()
        self.log.config.retention_bytes = retention_bytes
        try:
            deleted = self.log.delete_retained_segments(hw, now_ms=self.clock)
        finally:
            self.log.config.retention_bytes = -1
        assert deleted == bases[: len(deleted)]
        assert self.log.size_in_bytes() >= min(size, retention_bytes) or not deleted
        if deleted:
            new_start = bases[len(deleted)]
            assert new_start <= hw
            self._advance_start(new_start)

    @rule(age=st.integers(0, 3000))
    def delete_retained_by_time(self, age: int) -> None:
        bases = self.log.segment_bases
        self.log.config.retention_ms = age
        try:
            deleted = self.log.delete_retained_segments(self.log_end, now_ms=self.clock)
        finally:
            self.log.config.retention_ms = -1
        assert deleted == bases[: len(deleted)]
        if deleted:
            new_start = bases[len(deleted)]
            gone = [r for r in self.records if self.log_start <= r.offset < new_start]
            assert all(self.clock - r.timestamp > age for r in gone)
            self._advance_start(new_start)

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = Log.open(self.directory, _config())

    @rule()
    def reopen_with_recovery(self) -> None:
        self.log.close()
        self.log = Log.open(self.directory, _config(), recover=True)

    @rule()
    def reopen_from_recovery_point(self) -> None:
        self.log.close()
        self.log = Log.open(self.directory, _config(), recover=True, recovery_point=self.log_end // 2)

    @precondition(lambda self: self.log_end > self.log_start)
    @rule(data=st.data(), max_bytes=st.integers(1, 2000))
    def read_from(self, data: st.DataObject, max_bytes: int) -> None:
        start = data.draw(st.integers(self.log_start, self.log_end), label="start")
        got = read_all(self.directory, start, max_bytes)
        assert [tuple(r) for r in got] == [self._row(r) for r in self.records if r.offset >= start]

    @rule()
    def tail(self) -> None:
        """A long-lived reader follows rolls and re-seeks after truncation and retention."""
        while True:
            try:
                chunk, headers = self.tailer.read(1 << 62, 500)
            except OffsetOutOfRangeError:
                self.tailer.seek(self.log_start)
                continue
            if not headers:
                break
            expected = {r.offset: self._row(r) for r in self.records}
            for pos, _h in headers:
                for r in decode_batch(chunk, pos)[1]:
                    if r.offset in expected:
                        assert tuple(r) == expected[r.offset]
                    else:
                        assert r.offset < self.log_start
        assert self.tailer.next_offset == self.log_end

    # -- invariants -------------------------------------------------------------------------
    @staticmethod
    def _row(r: Rec) -> tuple:
        return (r.offset, r.timestamp, r.key, r.value, r.headers)

    @invariant()
    def offsets_match(self) -> None:
        assert self.log.log_end_offset == self.log_end
        assert self.log.log_start_offset == self.log_start

    @invariant()
    def records_match(self) -> None:
        got = read_all(self.directory)
        want = [self._row(r) for r in self.records if r.offset >= self.log_start]
        assert [tuple(r) for r in got] == want

    @invariant()
    def epochs_match(self) -> None:
        assert self.log.epoch_entries == self.epochs
        with LogReader(self.directory) as reader:
            assert reader.leader_epochs() == self.epochs
        starts = [s for _e, s in self.epochs]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        assert all(a[0] < b[0] for a, b in zip(self.epochs, self.epochs[1:], strict=False))

    @invariant()
    def timestamps_match(self) -> None:
        live = [r for r in self.records if r.offset >= self.log_start]
        probes = {self.clock - 5000, self.clock + 5000}
        probes.update(r.timestamp for r in live[:: max(1, len(live) // 4)])
        probes.update(r.timestamp + 1 for r in live[-3:])
        for ts in probes:
            want = next((r.offset for r in live if r.timestamp >= ts), None)
            assert self.log.offset_for_timestamp(ts) == want, ts

    @invariant()
    def verifies_clean(self) -> None:
        assert verify_replica(self.directory) == []


LogModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLogModel = LogModel.TestCase
