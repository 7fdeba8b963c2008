"""Replication rules with real brokers: clean versus unclean election, divergent logs converging."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_replication_support import (
    partition_state,
    read_partition,
    replica_log_bytes,
    wait_converged,
    wait_until,
)

pytestmark = pytest.mark.e2e


def test_unclean_election_only_where_enabled(make_cluster, kctl, data_dir):
    from kctl.client.producer import produce

    c = make_cluster(brokers=3)
    c.create_topic("safe", 1, 3)
    c.create_topic("lossy", 1, 3, {"unclean.leader.election.enable": True})
    # broker 2 falls out of sync: stopped while both topics take records
    laggard = 2
    c.stop_broker(laggard)
    for topic in ("safe", "lossy"):
        assert all(r.error is None for r in produce(data_dir, topic, [b"old-%d" % i for i in range(50)]))
        assert laggard not in partition_state(c, topic).isr
    # every in-sync replica dies; the out-of-sync one comes back alone
    for b in (0, 1):
        c.kill_broker(b)
    c.start_broker(laggard)

    lossy = wait_until(lambda: (s := partition_state(c, "lossy")).leader == laggard and s, 5, "an unclean leader")
    assert lossy.isr == [laggard]
    wait_until(lambda: any(e["type"] == "leader_changed" and e["topic"] == "lossy" and e["reason"] == "unclean"
                           for e in c.events()), 2, "the unclean election in the history")
    res = kctl("produce", "lossy", "--timeout", "5", "new")
    assert res.returncode == 0, res.stderr
    assert [v for _o, v in read_partition(c, "lossy")] == [b"new"]  # the old records are lost

    safe = partition_state(c, "safe")
    assert safe.leader is None and laggard not in safe.isr
    doc = json.loads(kctl("-o", "json", "describe", "safe").stdout)
    assert doc["topics"][0]["partitions"][0]["leader"] is None
    plain = kctl("describe", "safe").stdout.decode().splitlines()
    assert plain[1].split("\t")[2] == "none"
    res = kctl("produce", "safe", "--timeout", "1", "x")
    assert res.returncode == 3, res.stderr
    err = res.stderr.decode()
    assert err.startswith("kctl: error:") and err.count("\n") == 1, err

    # the in-sync replicas return: "safe" is whole again, "lossy" follows its new history
    c.start()
    safe = wait_converged(c, "safe")
    assert safe.leader in (0, 1)
    assert [v for _o, v in read_partition(c, "safe")] == [b"old-%d" % i for i in range(50)]
    lossy = wait_converged(c, "lossy")
    logs = {b: replica_log_bytes(c, b, "lossy") for b in lossy.replicas}
    assert len(set(logs.values())) == 1, "divergent replicas did not truncate to the unclean leader's log"
    assert [v for _o, v in read_partition(c, "lossy")] == [b"new"]


def test_elect_unclean_on_demand(make_cluster, kctl, data_dir):
    from kctl.client.producer import produce

    c = make_cluster(brokers=2)
    c.create_topic("od", 1, 2)
    c.stop_broker(1)
    assert all(r.error is None for r in produce(data_dir, "od", [b"a", b"b"]))
    c.kill_broker(0)
    c.start_broker(1)
    wait_until(lambda: partition_state(c, "od").leader is None, 3, "the partition to stay offline")
    res = kctl("-o", "json", "elect", "--type", "unclean", "od:0")
    assert res.returncode == 0, res.stderr
    [ev] = json.loads(res.stdout)["elections"]
    assert ev["new_leader"] == 1 and ev["reason"] == "unclean"
    assert partition_state(c, "od").leader == 1
    assert kctl("produce", "od", "c").returncode == 0
    c.start_broker(0)
    wait_converged(c, "od")
    assert [v for _o, v in read_partition(c, "od")] == [b"c"]
