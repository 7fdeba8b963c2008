"""Every list/describe command in its three styles, driven through the real CLI.

JSON is compared exactly (it is a public interface); tables and plain output by their content.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def _plain_rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines()]


# -- cluster status ---------------------------------------------------------------------------------
def test_cluster_status_json_exact(cli, shared_cluster):
    c = shared_cluster
    s = c.status()
    r = cli("--data-dir", c.layout.root, "-o", "json", "cluster", "status")
    assert r.code == 0, r.err
    assert r.json() == {
        "cluster_id": c.cluster_id,
        "controller": s["controller"],
        "controller_epoch": s["controller_epoch"],
        "brokers": [{"id": b.broker_id, "state": "up", "pid": b.pid, "controller": b.broker_id == s["controller"],
                     "leaders": b.leaders, "replicas": b.replicas, "broker_epoch": b.epoch} for b in s["brokers"]],
    }
    assert sum(b.leaders for b in s["brokers"]) == 6  # orders: 3 partitions, audit: 1, clicks: 2
    assert sum(b.replicas for b in s["brokers"]) == 3 * 3 + 2 + 2 * 3


def test_cluster_status_plain_and_table_mark_the_controller(cli, shared_cluster):
    c = shared_cluster
    ctrl = c.controller_id()
    plain = cli("--data-dir", c.layout.root, "cluster", "status")
    rows = _plain_rows(plain.out)
    assert rows[0] == ["BROKER", "STATE", "PID", "CONTROLLER", "LEADERS", "REPLICAS"]
    assert {r[0]: r[3] for r in rows[1:]} == {str(b): ("yes" if b == ctrl else "no") for b in (0, 1, 2)}
    assert all(r[1] == "up" for r in rows[1:])
    table = cli("--data-dir", c.layout.root, "-o", "table", "cluster", "status")
    assert table.code == 0
    assert f"Cluster {c.cluster_id}" in table.out and "controller epoch" in table.out
    ctrl_line = next(line for line in table.out.splitlines() if line.strip("│ ").startswith(f"{ctrl} "))
    assert "yes" in ctrl_line and "up" in ctrl_line


# -- topics ---------------------------------------------------------------------------------------
def test_topic_list_three_styles(cli, shared_cluster):
    root = shared_cluster.layout.root
    r = cli("--data-dir", root, "-o", "json", "topic", "list")
    assert r.json() == {"topics": [{"topic": "audit", "partitions": 1, "replication_factor": 2},
                                   {"topic": "clicks", "partitions": 2, "replication_factor": 3},
                                   {"topic": "orders", "partitions": 3, "replication_factor": 3}]}
    plain = cli("--data-dir", root, "topic", "list")
    assert _plain_rows(plain.out) == [["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"], ["audit", "1", "2"],
                                      ["clicks", "2", "3"], ["orders", "3", "3"]]
    table = cli("--data-dir", root, "-o", "table", "topic", "list")
    assert "REPLICATION-FACTOR" in table.out and "orders" in table.out and "audit" in table.out


def _expected_describe(c, topic: str, high_watermarks: list[int], config: dict) -> dict:
    md = c.metadata().topic(topic)
    return {"topic": topic, "topic_id": md.topic_id, "config": config, "partitions": [
        {"partition": p, "leader": part.leader, "replicas": part.replicas, "isr": part.isr,
         "leader_epoch": part.leader_epoch, "log_start": 0, "high_watermark": hw, "log_end": hw}
        for p, (part, hw) in enumerate(zip(md.partitions, high_watermarks, strict=True))]}


@pytest.mark.parametrize("command", [["describe"], ["topic", "describe"]])
def test_describe_json_exact(cli, shared_cluster, command):
    c = shared_cluster
    r = cli("--data-dir", c.layout.root, "-o", "json", *command)
    assert r.code == 0, r.err
    assert r.json() == {"topics": [_expected_describe(c, "audit", [2], {}),
                                   _expected_describe(c, "clicks", [7, 2], {}),
                                   _expected_describe(c, "orders", [5, 3, 0], {"min.insync.replicas": 2})]}
    one = cli("--data-dir", c.layout.root, "-o", "json", *command, "orders")
    assert [t["topic"] for t in one.json()["topics"]] == ["orders"]


def test_describe_plain_and_table(cli, shared_cluster):
    c = shared_cluster
    plain = cli("--data-dir", c.layout.root, "describe", "orders")
    rows = _plain_rows(plain.out)
    assert rows[0] == ["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "LEADER-EPOCH", "LOG-START",
                       "HIGH-WATERMARK", "LOG-END"]
    parts = c.metadata().topic("orders").partitions
    assert rows[1:] == [["orders", str(p), str(part.leader), ",".join(map(str, part.replicas)),
                         ",".join(map(str, part.isr)), "0", "0", hw, hw]
                        for p, (part, hw) in enumerate(zip(parts, ["5", "3", "0"], strict=True))]
    table = cli("--data-dir", c.layout.root, "-o", "table", "describe")
    assert "HIGH-WATERMARK" in table.out and "STATUS" in table.out
    assert sum(1 for line in table.out.splitlines() if "orders" in line) == 3


def test_describe_filters_on_a_healthy_cluster(cli, shared_cluster):
    root = shared_cluster.layout.root
    urp = cli("--data-dir", root, "-o", "json", "describe", "--under-replicated")
    assert urp.code == 0 and urp.json() == {"topics": []}
    off = cli("--data-dir", root, "describe", "--unavailable")
    assert off.code == 0 and _plain_rows(off.out) == [["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR",
                                                      "LEADER-EPOCH", "LOG-START", "HIGH-WATERMARK", "LOG-END"]]
    missing = cli("--data-dir", root, "describe", "nope")
    assert missing.code == 1 and missing.err.startswith("kctl: error: topic 'nope' does not exist")


# -- events ---------------------------------------------------------------------------------------
def test_events_three_styles(cli, shared_cluster):
    c = shared_cluster
    root = c.layout.root
    js = cli("--data-dir", root, "-o", "json", "events")
    evs = js.json_lines()
    assert evs == c.events()
    types = [e["type"] for e in evs]
    assert types[0] == "cluster_created"
    assert {"controller_elected", "broker_up", "topic_created", "group_member_joined", "group_rebalance",
            "group_member_left"} <= set(types)
    assert all(e["time"].endswith("Z") and "T" in e["time"] for e in evs)

    plain = cli("--data-dir", root, "events", "--type", "topic_created")
    rows = _plain_rows(plain.out)
    assert rows[0] == ["TIME", "TYPE", "WHAT"]
    assert [r[1] for r in rows[1:]] == ["topic_created", "topic_created", "topic_created"]
    assert rows[1][2] == "topic orders created: 3 partition(s), replication factor 3, min.insync.replicas=2"

    last = cli("--data-dir", root, "-o", "json", "events", "-n", "2")
    assert last.json_lines() == evs[-2:]
    table = cli("--data-dir", root, "-o", "table", "events", "-n", "50")
    assert "Cluster events" in table.out and "is the controller (controller epoch" in table.out
    assert cli("--data-dir", root, "events", "-n", "-1").code == 2


# -- consumer groups --------------------------------------------------------------------------------
def test_group_list_three_styles(cli, shared_cluster):
    root = shared_cluster.layout.root
    r = cli("--data-dir", root, "-o", "json", "group", "list")
    assert r.code == 0, r.err
    doc = r.json()
    assert [{k: g[k] for k in ("group", "state", "members")} for g in doc["groups"]] == \
        [{"group": "billing", "state": "Empty", "members": 0}]
    plain = cli("--data-dir", root, "group", "list")
    assert _plain_rows(plain.out) == [["GROUP", "STATE", "MEMBERS"], ["billing", "Empty", "0"]]
    table = cli("--data-dir", root, "-o", "table", "group", "list")
    assert "billing" in table.out and "Empty" in table.out


def test_group_describe_three_styles_with_lag_totals(cli, shared_cluster):
    root = shared_cluster.layout.root
    r = cli("--data-dir", root, "-o", "json", "group", "describe", "billing")
    assert r.code == 0, r.err
    doc = r.json()
    assert {k: doc[k] for k in ("group", "state", "total_lag", "members", "partitions")} == {
        "group": "billing", "state": "Empty", "total_lag": 3, "members": [],
        "partitions": [
            {"topic": "clicks", "partition": 0, "current_offset": 4, "log_end_offset": 7, "lag": 3,
             "member_id": None},
            {"topic": "clicks", "partition": 1, "current_offset": 2, "log_end_offset": 2, "lag": 0,
             "member_id": None}]}
    assert isinstance(doc["generation"], int) and doc["generation"] >= 2  # joined, then left
    plain = cli("--data-dir", root, "group", "describe", "billing")
    assert _plain_rows(plain.out) == [
        ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
         "CLIENT-ID"],
        ["billing", "clicks", "0", "4", "7", "3", "-", "-", "-"],
        ["billing", "clicks", "1", "2", "2", "0", "-", "-", "-"]]
    assert "total lag 3" in plain.err  # the summary goes to stderr, the rows stay parseable
    table = cli("--data-dir", root, "-o", "table", "group", "describe", "billing")
    assert "total lag 3" in table.out and "LOG-END-OFFSET" in table.out
    missing = cli("--data-dir", root, "group", "describe", "nope")
    assert missing.code == 1 and missing.err.startswith("kctl: error: group 'nope' does not exist")


# -- watch --once ----------------------------------------------------------------------------------
def test_watch_once_json_and_frame(cli, shared_cluster):
    c = shared_cluster
    root = c.layout.root
    r = cli("--data-dir", root, "-o", "json", "watch", "--once")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["cluster_id"] == c.cluster_id and doc["controller"] == c.controller_id()
    assert [b["state"] for b in doc["brokers"]] == ["up", "up", "up"]
    assert [(p["topic"], p["partition"], p["health"], p["high_watermark"]) for p in doc["partitions"]] == [
        ("audit", 0, "ok", 2), ("clicks", 0, "ok", 7), ("clicks", 1, "ok", 2),
        ("orders", 0, "ok", 5), ("orders", 1, "ok", 3), ("orders", 2, "ok", 0)]
    assert doc["groups"] == [{"group": "billing", "state": "Empty", "members": 0, "total_lag": 3,
                              "lag_by_topic": {"clicks": 3}}]
    assert doc["events"] == c.events()[-8:]
    only = cli("--data-dir", root, "-o", "json", "watch", "--once", "orders")
    assert {p["topic"] for p in only.json()["partitions"]} == {"orders"} and only.json()["groups"] == []
    frame = cli("--data-dir", root, "watch", "--once", "clicks")
    assert frame.code == 0
    assert f"controller: broker {c.controller_id()}" in frame.out and "brokers up 3/3" in frame.out
    assert "Consumer groups" in frame.out and "clicks=3" in frame.out
    assert cli("--data-dir", root, "watch", "--once", "nope").code == 1
