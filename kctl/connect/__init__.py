"""Connectors: streams between a cluster and the world outside it (Kafka Connect's job).

* :class:`~kctl.connect.sqlite_source.SqliteSource`: a SQLite table's snapshot and every change
  after it (trigger-based capture), keyed by primary key, into a compacted topic;
* :class:`~kctl.connect.sqlite_sink.SqliteSink`: change events applied to a SQLite table;
* :class:`~kctl.connect.file_source.FileSource` and :class:`~kctl.connect.file_sink.FileSink`:
  Kafka's FileStream connectors (lines of a file, followed like ``tail -F``).

Sources deliver exactly once into their topic and sinks apply exactly once (see
:mod:`kctl.connect.runtime` for how). Each connector is a foreground process holding a liveness
lock under ``<data>/connect/<name>/``; sinks are consumer group members (group ``connect-<name>``).
This package sits above :mod:`kctl.client` and below :mod:`kctl.cli`.
"""

from __future__ import annotations
