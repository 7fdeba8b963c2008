"""``kctl produce`` itself: reading records from arguments or stdin and producing them.

Kept free of typer so that the one-shot fast path (:mod:`kctl.cli.fastpath`) can run it without
paying typer's import cost; :mod:`kctl.cli.cmd_produce` declares the command's options.
"""

from __future__ import annotations

import os
import select
import sys
import time

from kctl.cli.state import State

READ_CHUNK = 1 << 20


def unescape(text: str) -> bytes:
    """``\\0``, ``\\n``, ``\\t``, ``\\r``, ``\\\\`` and ``\\xHH`` in a delimiter or separator."""
    from kctl.errors import InvalidArgumentError

    out = bytearray()
    i = 0
    raw = text.encode()
    while i < len(raw):
        ch = raw[i]
        if ch == 0x5C and i + 1 < len(raw):
            nxt = chr(raw[i + 1])
            simple = {"0": 0, "n": 10, "t": 9, "r": 13, "\\": 92}
            if nxt in simple:
                out.append(simple[nxt])
                i += 2
                continue
            if nxt == "x" and i + 3 < len(raw) + 0:
                try:
                    out.append(int(raw[i + 2:i + 4].decode(), 16))
                    i += 4
                    continue
                except ValueError:
                    pass
            raise InvalidArgumentError(f"unknown escape '\\{nxt}' in '{text}'")
        out.append(ch)
        i += 1
    if not out:
        raise InvalidArgumentError("a delimiter or separator cannot be empty")
    return bytes(out)


LINGER_SECONDS = 0.005  # Kafka's linger.ms default: how long a paused writer may make us wait


def _stdin_ready(fd: int, timeout: float = LINGER_SECONDS) -> bool:
    """True if more input arrives within ``timeout`` (a pipe refilling, not a paused writer)."""
    try:
        r, _, _ = select.select([fd], [], [], timeout)
        return bool(r)
    except (OSError, ValueError):
        return True


def _widen_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer so each read takes a large slice of a fast writer's output."""
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, READ_CHUNK)  # F_SETPIPE_SZ (Linux); harmless to fail elsewhere
    except (OSError, ValueError, AttributeError):
        pass


def run_produce(st: State, topic: str, values: list[str], key: str | None, key_separator: str | None,
                delimiter: str, partition: int | None, header_args: list[str], input_format: str,
                null_empty: bool, acks: str, compression: str, print_offsets: bool, timeout: float) -> None:
    from kctl.client.producer import DeliveryReport, Producer
    from kctl.cluster.config import validate_topic_name
    from kctl.cluster.layout import ClusterLayout
    from kctl.cluster.metadata import require_live_cluster
    from kctl.errors import (
        ClusterUnavailableError,
        DeliveryError,
        InvalidArgumentError,
        PartitionOfflineError,
    )

    validate_topic_name(topic)
    if input_format not in ("text", "json"):
        raise InvalidArgumentError(f"--input must be text or json (got '{input_format}')")
    if key is not None and key_separator is not None:
        raise InvalidArgumentError("--key and --key-separator cannot be used together")
    headers = []
    for h in header_args:
        if "=" not in h:
            raise InvalidArgumentError(f"--header takes KEY=VALUE (got '{h}')")
        hk, hv = h.split("=", 1)
        headers.append((hk, hv.encode()))
    delim = unescape(delimiter)
    sep = unescape(key_separator) if key_separator is not None else None
    key_b = key.encode() if key is not None else None
    if null_empty and key_b == b"":
        key_b = None

    md = require_live_cluster(ClusterLayout.at(st.data_dir))
    t = md.topic(topic)
    if partition is not None and not 0 <= partition < len(t.partitions):
        from kctl.errors import UnknownPartitionError

        raise UnknownPartitionError(f"topic '{topic}' has no partition {partition} (it has {len(t.partitions)})")

    out = sys.stdout
    as_json = st.is_json
    errors: list[BaseException] = []
    partitions_used: set[int] = set()

    def on_delivery(rep: DeliveryReport) -> None:
        if rep.error is not None:
            errors.append(rep.error)
            return
        partitions_used.add(rep.partition)
        if not print_offsets:
            return
        if as_json:
            lines = [f'{{"topic":"{rep.topic}","partition":{rep.partition},"offset":{o},"timestamp":{rep.timestamp}}}\n'
                     for o in range(rep.base_offset, rep.base_offset + rep.count)]
        else:
            prefix = f"{rep.topic}\t{rep.partition}\t"
            lines = [f"{prefix}{o}\n" for o in range(rep.base_offset, rep.base_offset + rep.count)]
        out.write("".join(lines))
        out.flush()

    started = time.monotonic()
    from kctl.cli.progress import Progress

    progress = Progress("produced", enabled=sys.stderr.isatty() and not values)
    producer = Producer(st.data_dir, acks=acks, compression=compression, timeout=timeout, on_delivery=on_delivery)
    count = 0
    simple = key_b is None and sep is None and not headers and not null_empty and partition is None

    def send_one(value: bytes, k: bytes | None) -> None:
        if null_empty:
            value_o = value if value else None
            k = k if k else None
        else:
            value_o = value
        producer.send(topic, value_o, k, headers or None, partition)

    try:
        if values:
            for v in values:
                send_one(v.encode(), key_b)
            count = len(values)
        elif input_format == "json":
            count = _produce_json(producer, topic, partition, headers)
        else:
            fd = sys.stdin.fileno() if sys.stdin is not None else -1
            if fd < 0:
                raise InvalidArgumentError("no VALUE arguments and no stdin to read records from")
            _widen_pipe(fd)
            rest = b""
            while True:
                chunk = os.read(fd, READ_CHUNK)
                if not chunk:
                    break
                if len(delim) == 1:
                    # a one-byte delimiter cannot span chunks: split the chunk alone (no 1 MB copy)
                    parts = chunk.split(delim)
                    if rest:
                        parts[0] = rest + parts[0]
                else:
                    parts = (rest + chunk).split(delim)
                rest = parts.pop()
                if parts:
                    count += len(parts)
                    progress.tick(len(parts), len(chunk))
                    if simple:
                        producer.send_values(topic, parts)  # type: ignore[arg-type]
                    elif sep is not None:
                        for line in parts:
                            k, found, v = line.partition(sep)
                            if found:
                                send_one(v, k)
                            else:
                                send_one(line, None)
                    else:
                        for line in parts:
                            send_one(line, key_b)
                if not _stdin_ready(fd):
                    # the writer paused (an interactive terminal, a slow pipe): send what we have
                    producer.seal_all()
                    producer._poll_inflight()
            if rest:
                count += 1
                if sep is not None:
                    k, found, v = rest.partition(sep)
                    send_one(v if found else rest, k if found else None)
                else:
                    send_one(rest, key_b)
        producer.flush()
    except KeyboardInterrupt:
        producer.flush()
    finally:
        producer.close()
        progress.close()
    elapsed = time.monotonic() - started
    if sys.stderr.isatty() and not as_json:
        st.info(f"[dim]{count} records, {len(partitions_used)} partitions, {elapsed:.2f} s[/]")
    if producer.failed:
        first = producer.first_error
        msg = f"{producer.failed} of {count} record(s) could not be delivered: {first}"
        if isinstance(first, (PartitionOfflineError, ClusterUnavailableError)):
            raise PartitionOfflineError(msg)
        raise DeliveryError(msg)


def _produce_json(producer, topic: str, partition: int | None, headers: list) -> int:  # type: ignore[no-untyped-def]
    from kctl.client.envelope import parse_envelope_line

    count = 0
    for lineno, line in enumerate(sys.stdin.buffer, 1):
        if not line.strip():
            continue
        rec = parse_envelope_line(line, lineno=lineno)
        hdrs = list(rec.headers) + headers
        p = partition if partition is not None else rec.partition
        producer.send(topic, rec.value, rec.key, hdrs or None, p,
                      rec.timestamp if rec.timestamp is not None and rec.timestamp >= 0 else None)
        count += 1
    return count
