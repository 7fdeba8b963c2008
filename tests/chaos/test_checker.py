"""The checker on synthetic histories: a clean one passes; each one that breaks a property is
caught as exactly that anomaly (and nothing else that it does not break)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chaos.checker import ANOMALIES, check, parse_tp


class H:
    """A tiny history builder with a clock that ticks on every op."""

    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []
        self.trace: list[dict[str, Any]] = []
        self.t = 0.0

    def _op(self, **op: Any) -> dict[str, Any]:
        self.t += 1.0
        op["t"] = self.t
        self.ops.append(op)
        return op

    def send(self, values: list[str], offset: int | None, *, outcome: str = "ok", process: str = "p0",
             topic: str = "t", partition: int = 0) -> None:
        base = {"process": process, "f": "send", "topic": topic, "partition": partition, "values": values}
        self._op(type="invoke", **base)
        if outcome == "ok":
            self._op(type="ok", offset=offset, **base)
        elif outcome in ("fail", "info"):
            self._op(type=outcome, error="x", **base)

    def start(self, process: str, pid: int) -> None:
        self._op(type="info", f="start", process=process, pid=pid)

    def assign(self, process: str, positions: list[list[Any]]) -> None:
        self._op(type="ok", f="assign", process=process, positions=positions)

    def poll(self, process: str, reads: list[list[Any]], mode: str = "assign", **extra: Any) -> None:
        self._op(type="ok", f="poll", process=process, mode=mode, reads=reads, **extra)

    def drain(self, reads: list[list[Any]]) -> None:
        self.assign("drain", [[r[0], r[1], r[2]] for r in reads])
        self.poll("drain", reads, mode="drain")

    def commit(self, process: str, offsets: list[list[Any]]) -> None:
        self._op(type="ok", f="commit", process=process, offsets=offsets)

    def traced(self, op: str, member: str, pid: int, tp: str, generation: int = 1) -> None:
        self.t += 1.0
        self.trace.append({"t": self.t, "op": op, "member": member, "pid": pid, "tp": tp, "generation": generation})

    def check(self):  # type: ignore[no-untyped-def]
        return check(self.ops, self.trace)


def only(result: Any, *kinds: str) -> None:
    found = result.found()
    assert set(found) == set(kinds), (found, {k: result.examples[k] for k in found})


def clean_history() -> H:
    h = H()
    h.send(["a", "b"], 0)
    h.send(["c"], 2)
    h.send(["d"], None, outcome="info")  # unknown: may or may not be there
    h.send(["e"], None, outcome="fail")
    h.send(["f"], None, outcome="none")  # invoked, never completed: unknown
    h.assign("c0", [["t", 0, 0]])
    h.poll("c0", [["t", 0, 0, ["a", "b"]]])
    h.poll("c0", [["t", 0, 2, ["c", "d"]]])
    h.drain([["t", 0, 0, ["a", "b", "c", "d"]]])
    return h


def test_a_clean_history_is_valid() -> None:
    r = clean_history().check()
    assert r.valid, r.found()
    assert r.stats["send_ok"] == 3 and r.stats["send_fail"] == 1 and r.stats["send_info"] == 2
    assert r.stats["drained"] == 4
    assert "VALID" in r.summary()


def test_lost_write_acked_but_a_later_offset_was_read() -> None:
    h = H()
    h.send(["a"], 0)
    h.send(["b"], 1)
    h.drain([["t", 0, 1, ["b"]]])
    r = h.check()
    only(r, "lost")
    assert r.examples["lost"][0]["value"] == "a"


def test_lost_even_if_an_earlier_consumer_read_it() -> None:
    h = H()
    h.send(["a", "b"], 0)
    h.poll("c0", [["t", 0, 0, ["a", "b"]]])
    h.drain([["t", 0, 1, ["b"]]])  # the final log no longer holds offset 0
    r = h.check()
    assert r.counts["lost"] == 1 and r.examples["lost"][0]["read_earlier"] is True


def test_unseen_write_the_final_drain_never_reached() -> None:
    h = H()
    h.send(["a", "b"], 0)
    h.drain([["t", 0, 0, ["a"]]])
    r = h.check()
    only(r, "unseen")
    assert r.examples["unseen"][0]["value"] == "b"


def test_unknown_outcome_is_never_lost() -> None:
    h = H()
    h.send(["a"], None, outcome="info")
    h.send(["b"], None, outcome="none")
    h.send(["c"], 0)
    h.drain([["t", 0, 0, ["c"]]])
    assert h.check().valid


def test_duplicate_value_at_two_offsets() -> None:
    h = H()
    h.send(["a"], 0)
    h.drain([["t", 0, 0, ["a", "a"]]])
    only(h.check(), "duplicate")


def test_inconsistent_offset_two_values_at_one_offset() -> None:
    h = H()
    h.send(["a"], 0)
    h.send(["b"], None, outcome="info")
    h.poll("c0", [["t", 0, 0, ["a"]]])
    h.poll("c1", [["t", 0, 0, ["b"]]])
    h.drain([["t", 0, 0, ["a"]]])
    only(h.check(), "inconsistent-offset")


def test_inconsistent_offset_ack_names_an_offset_holding_another_value() -> None:
    h = H()
    h.send(["a"], 0)
    h.send(["b"], 0, process="p1")  # both acknowledged at offset 0
    h.drain([["t", 0, 0, ["a"]], ["t", 0, 1, ["b"]]])
    r = h.check()
    assert r.counts["inconsistent-offset"] == 1
    assert r.examples["inconsistent-offset"][0]["acked"] == "b"


def test_aborted_read_of_a_failed_write() -> None:
    h = H()
    h.send(["a"], None, outcome="fail")
    h.drain([["t", 0, 0, ["a"]]])
    only(h.check(), "aborted-read")


def test_phantom_read_of_a_value_never_written() -> None:
    h = H()
    h.drain([["t", 0, 0, ["ghost"]]])
    only(h.check(), "phantom-read")


@pytest.mark.parametrize(("second", "kind"), [(1, "nonmonotonic-poll"), (4, "skipping-poll")])
def test_assign_mode_polls_go_forward_one_offset_at_a_time(second: int, kind: str) -> None:
    h = H()
    h.send(["a", "b", "c", "d", "e", "f"], 0)
    h.assign("c0", [["t", 0, 0]])
    h.poll("c0", [["t", 0, 0, ["a", "b", "c"]]])
    h.poll("c0", [["t", 0, second, ["abcdef"[second]]]])
    h.drain([["t", 0, 0, list("abcdef")]])
    only(h.check(), kind)


def test_assign_mode_first_poll_must_start_at_the_assigned_position() -> None:
    h = H()
    h.send(["a", "b"], 0)
    h.assign("c0", [["t", 0, 0]])
    h.poll("c0", [["t", 0, 1, ["b"]]])
    h.drain([["t", 0, 0, ["a", "b"]]])
    only(h.check(), "skipping-poll")


def test_a_new_assign_session_may_start_anywhere() -> None:
    h = H()
    h.send(["a", "b", "c"], 0)
    h.assign("c0", [["t", 0, 0]])
    h.poll("c0", [["t", 0, 0, ["a", "b", "c"]]])
    h.assign("c0", [["t", 0, 1]])
    h.poll("c0", [["t", 0, 1, ["b"]]])
    h.drain([["t", 0, 0, ["a", "b", "c"]]])
    assert h.check().valid


def test_group_mode_polls_checked_within_a_generation_only() -> None:
    h = H()
    h.send(["a", "b", "c", "d"], 0)
    h.poll("g0", [["t", 0, 0, ["a", "b"]]], mode="group", generation=1, member="m0")
    h.poll("g0", [["t", 0, 1, ["b", "c"]]], mode="group", generation=2, member="m0")  # handed back: ok
    h.drain([["t", 0, 0, ["a", "b", "c", "d"]]])
    assert h.check().valid
    h.poll("g0", [["t", 0, 0, ["a"]]], mode="group", generation=2, member="m0")
    only(h.check(), "nonmonotonic-poll")


def test_offset_reset_is_reported() -> None:
    h = H()
    h._op(type="info", f="reset", process="c0", topic="t", partition=0, **{"from": 9, "to": 0, "why": "x"})
    only(h.check(), "offset-reset")


def test_nonmonotonic_send_offsets_of_one_producer() -> None:
    h = H()
    h.send(["a"], 5)
    h.send(["b"], 3)
    h.drain([["t", 0, 3, ["b", "x", "a"]]])
    h.send(["x"], 4, process="p1")
    only(h.check(), "nonmonotonic-send")


def test_double_assignment_in_one_generation() -> None:
    h = H()
    h.t += 1
    h.trace.append({"t": h.t, "op": "rebalance", "generation": 3,
                    "assignment": {"m0": ["t-0", "t-1"], "m1": ["t-1"]}})
    r = h.check()
    only(r, "double-assignment")
    assert r.examples["double-assignment"][0]["partition"] == "t-1"


def test_concurrent_ownership_while_the_holder_lives() -> None:
    h = H()
    h.start("g0", 100)
    h.start("g1", 200)
    h.traced("acquire", "m0", 100, "t-0")
    h.traced("acquire", "m1", 200, "t-0")
    only(h.check(), "concurrent-ownership")


def test_ownership_passes_on_release_or_on_the_holders_death() -> None:
    h = H()
    h.start("g0", 100)
    h.start("g1", 200)
    h.start("g2", 300)
    h.traced("acquire", "m0", 100, "t-0")
    h.traced("release", "m0", 100, "t-0")
    h.traced("acquire", "m1", 200, "t-0")
    h._op(type="info", f="kill-consumer", process="nemesis", fault=True, target="consumer", pid=200)
    h.traced("acquire", "m2", 300, "t-0")
    r = h.check()
    assert r.valid, r.found()
    assert r.stats["faults"] == 1


def test_read_without_ownership() -> None:
    h = H()
    h.start("g0", 100)
    h.send(["a"], 0)
    h.traced("acquire", "m0", 100, "t-1")
    h.poll("g0", [["t", 0, 0, ["a"]]], mode="group", generation=1, member="m0")
    h.drain([["t", 0, 0, ["a"]]])
    only(h.check(), "read-without-ownership")


def test_commit_going_backwards() -> None:
    h = H()
    h.send(["a", "b", "c"], 0)
    h.poll("g0", [["t", 0, 0, ["a", "b", "c"]]], mode="group", generation=1)
    h.commit("g0", [["t", 0, 3]])
    h.commit("g1", [["t", 0, 1]])
    h.drain([["t", 0, 0, ["a", "b", "c"]]])
    only(h.check(), "commit-backwards")


def test_committed_offset_past_records_no_member_read() -> None:
    h = H()
    h.send(["a", "b", "c"], 0)
    h.poll("g0", [["t", 0, 0, ["a"]]], mode="group", generation=1)
    h.commit("g0", [["t", 0, 3]])
    h.drain([["t", 0, 0, ["a", "b", "c"]]])
    r = h.check()
    only(r, "committed-unread")
    assert r.examples["committed-unread"][0]["first_missing"] == [1, 2]


def test_worker_crash_is_reported() -> None:
    h = H()
    h._op(type="info", f="crash", process="p0", pid=1, error="Traceback ... ValueError")
    only(h.check(), "worker-crash")


def test_every_anomaly_has_a_test_above() -> None:
    import sys

    text = Path(sys.modules[__name__].__file__ or "").read_text(encoding="utf-8")
    for kind in ANOMALIES:
        assert f'"{kind}"' in text, kind


def test_parse_tp_keeps_dashes_in_topic_names() -> None:
    assert parse_tp("my-topic-12") == ("my-topic", 12)
