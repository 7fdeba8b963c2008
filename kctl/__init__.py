"""kctl: a real, local, multi-broker Kafka-style cluster in one directory.

The Python API mirrors the command line::

    from kctl import Cluster, Producer, Consumer
    cluster = Cluster.init("/tmp/demo", brokers=3); cluster.start()
    cluster.create_topic("orders", partitions=3)
    with Producer("/tmp/demo") as p:
        p.send("orders", b"hello", key=b"k1")

Importing kctl loads neither typer nor rich; names below are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Cluster": "kctl.client.admin",
    "Producer": "kctl.client.producer",
    "Consumer": "kctl.client.consumer",
    "GroupConsumer": "kctl.client.group",
    "DeliveryReport": "kctl.client.producer",
    "Record": "kctl.storage.records",
    "Log": "kctl.storage.log",
}

if TYPE_CHECKING:
    from kctl.client.admin import Cluster
    from kctl.client.consumer import Consumer
    from kctl.client.group import GroupConsumer
    from kctl.client.producer import DeliveryReport, Producer
    from kctl.storage.log import Log
    from kctl.storage.records import Record


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        if name == "errors":
            import kctl.errors as errors

            return errors
        raise AttributeError(f"module 'kctl' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["Cluster", "Consumer", "DeliveryReport", "GroupConsumer", "Log", "Producer", "Record", "__version__"]
