"""The one-line sentences and colours of the events timeline (pure functions)."""

from __future__ import annotations

import pytest

from kctl.cli.cmd_ops import describe_event, event_style

CASES = [
    ({"type": "leader_changed", "topic": "orders", "partition": 0, "old_leader": 1, "new_leader": 2,
      "leader_epoch": 4, "isr": [2, 0], "reason": "broker_failure"},
     "orders-0: leader 1 -> 2, leader epoch 4, ISR 2,0 (broker failure)", "yellow"),
    ({"type": "leader_changed", "topic": "orders", "partition": 2, "old_leader": 1, "new_leader": None,
      "leader_epoch": 5, "isr": [1], "reason": "broker_failure"},
     "orders-2: leader 1 -> none: OFFLINE, leader epoch 5, ISR 1 (broker failure)", "bold red"),
    ({"type": "isr_expand", "topic": "orders", "partition": 1, "old_isr": [1, 2], "isr": [1, 2, 0],
      "reason": "follower_caught_up"}, "orders-1: ISR 1,2 -> 1,2,0 (follower caught up)", "green"),
    ({"type": "isr_shrink", "topic": "t", "partition": 0, "old_isr": [0, 1], "isr": [0], "reason": "follower_lagging"},
     "t-0: ISR 0,1 -> 0 (follower lagging)", "yellow"),
    ({"type": "controller_elected", "broker": 2, "controller_epoch": 3, "previous": 0},
     "broker 2 is the controller (controller epoch 3, was broker 0)", "yellow"),
    ({"type": "broker_down", "broker": 1, "broker_epoch": 2, "reason": "lock released (process exited)"},
     "broker 1 down (broker epoch 2): lock released (process exited)", "red"),
    ({"type": "broker_up", "broker": 1, "broker_epoch": 3, "pid": 42, "reason": "started"},
     "broker 1 up (broker epoch 3, pid 42): started", "green"),
    ({"type": "cluster_created", "cluster_id": "abc", "brokers": [0, 1, 2]},
     "cluster abc created with brokers 0,1,2", None),
    ({"type": "topic_created", "topic": "orders", "partitions": 3, "replication_factor": 3,
      "config": {"min.insync.replicas": 2}},
     "topic orders created: 3 partition(s), replication factor 3, min.insync.replicas=2", None),
    ({"type": "topic_deleted", "topic": "orders"}, "topic orders deleted", None),
    ({"type": "group_member_joined", "group": "g", "member_id": "c-1", "client_id": "c", "pid": 7, "generation": 2},
     "group g: member c (pid 7) joined, generation 2", None),
    ({"type": "group_member_died", "group": "g", "member_id": "c-1", "client_id": "c", "pid": 7,
      "reason": "process exited"}, "group g: member c (pid 7) died (process exited)", "red"),
    ({"type": "group_rebalance", "group": "g", "generation": 3, "members": ["a", "b"], "assignor": "range",
      "reason": "member joined"}, "group g: rebalanced to generation 3, 2 member(s), assignor range (member joined)",
     "yellow"),
    ({"type": "offsets_reset", "group": "g", "mode": "to-earliest", "offsets": ["t-0=0", "t-1=0"]},
     "group g: offsets reset (to-earliest): t-0=0,t-1=0", None),
    ({"type": "something_new", "x": 1, "time": "ignored"}, "something new: x=1", None),
]


@pytest.mark.parametrize("event,text,style", CASES, ids=[c[0]["type"] for c in CASES])
def test_event_sentence_and_colour(event, text, style):
    assert describe_event(event) == text
    assert event_style(event) == style
