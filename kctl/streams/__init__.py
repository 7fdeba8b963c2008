"""Stream processors (``kctl stream map|filter|count|aggregate``): consumer-group members that read
one topic, transform each record and produce the results to another.

Delivery guarantees, as implemented:

* **No loss.** An input offset is committed only after every output made from the records before
  it was acknowledged by the in-sync replicas (``acks=all``), and, for stateful processors, after
  their changelog records were acknowledged too. A crash at any moment (SIGKILL included) leaves
  the committed offset at or before the first record whose results are not all safely stored.
* **No duplicates, for deterministic transforms.** Each output carries the headers ``kctl.stream``
  (the processor's group) and ``kctl.input`` (``topic:partition:offset`` of its input record). When
  a member takes over an input partition (after a crash, a rebalance or a restart) it finds, per
  output partition, the highest input offset of that partition the group already produced there
  (:mod:`kctl.streams.positions`) and skips input records at or below it. This is exact for
  ``--expr`` map and filter, for ``--exec`` commands that are pure functions of the value, and for
  count and aggregate: it relies on a replayed record giving the same result (the same key, so the
  same output partition). Records skipped this way are not given to an ``--exec`` command again,
  but records processed after the last commit whose outputs did not all reach the topic are (and
  so are filtered-out records after the last kept one: nothing in the output carries their
  position). A command with side effects (writing a file, calling a service) can therefore repeat
  them for up to one commit interval of records after a crash; the output topic still gets no
  duplicates.
* **Stateful processors** (count, aggregate) keep per-key state in a local SQLite store backed by a
  compacted changelog topic ``<group>-changelog`` (one partition per input partition). Per round,
  outputs are acknowledged first, then the changelog records (each with the input offset it came
  from), then the local store is saved, then the input offset is committed. A new owner restores
  the store from the changelog and skips input records the state already holds; a record whose
  output was written but whose changelog record was not is applied to the state again without
  producing its output a second time. So the final value per key in the output equals a single
  uninterrupted run's, and no update is emitted twice.

Limits: resetting a processor group's offsets backwards does not reprocess records whose outputs
exist (use a new group name, or a new output topic); a record whose transform fails stops the
processor at that record (fix the expression, or move the group past the record with ``kctl group
reset-offsets``); a broker failover that loses acknowledged records (an unclean election) voids
the duplicate check for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kctl.streams.processor import (
        AggregateProcessor,
        CountProcessor,
        FilterProcessor,
        MapProcessor,
        StreamProcessor,
        StreamStats,
    )

__all__ = ["AggregateProcessor", "CountProcessor", "FilterProcessor", "MapProcessor", "StreamProcessor",
           "StreamStats"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kctl.streams import processor

        return getattr(processor, name)
    raise AttributeError(f"module 'kctl.streams' has no attribute {name!r}")
