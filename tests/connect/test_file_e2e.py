"""File source and sink as real processes: appends, a rotation, a truncation and SIGKILLs of both,
and the output file still holds every input line once, in order."""

from __future__ import annotations

import os
import time

import pytest

from tests.connect.conftest import file_lines, wait_for

pytestmark = pytest.mark.e2e


def append(path: str, lines: list[str], *, newline_at_end: bool = True) -> None:
    text = "\n".join(lines) + ("\n" if newline_at_end else "")
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def test_file_round_trip_through_kills_rotation_and_truncation(make_cluster, connector, tmp_path):
    make_cluster(brokers=1)
    src, out = str(tmp_path / "app.log"), str(tmp_path / "copy.log")
    expected: list[str] = []

    def write(lines: list[str], **kw: bool) -> None:
        append(src, lines, **kw)
        expected.extend(lines)

    source_args = ("file-source", "--file", src, "--topic", "lines", "--poll-interval", "0.05")
    sink_args = ("file-sink", "--topic", "lines", "--file", out)
    write([f"first {i}" for i in range(200)])
    source = connector(*source_args)
    sink = connector(*sink_args)
    for burst in range(5):
        write([f"burst {burst} line {i}" for i in range(40)])
        time.sleep(0.05)
    source.kill()
    write([f"while the source was down {i}" for i in range(100)])
    source = connector(*source_args)
    write([f"after restart {i}" for i in range(100)])
    sink.kill()
    write([f"while the sink was down {i}" for i in range(100)])
    sink = connector(*sink_args)
    wait_for(lambda: len(file_lines(out)) == len(expected), 20, "the first lines to be copied")

    # rotation: the old file ends in a line without a newline; the new one starts afresh
    write(["the last line of the old file"], newline_at_end=False)
    os.rename(src, src + ".1")
    write([f"rotated {i}" for i in range(50)])
    wait_for(lambda: len(file_lines(out)) == len(expected), 20, "the rotated file to be copied")

    # truncation in place (copytruncate): read again from the start
    with open(src, "w", encoding="utf-8"):
        pass
    time.sleep(0.3)
    write([f"after truncation {i}" for i in range(30)])
    wait_for(lambda: len(file_lines(out)) >= len(expected), 20, "the truncated file to be copied")
    source.kill()
    source = connector(*source_args)
    write([f"the end {i}" for i in range(10)])
    wait_for(lambda: len(file_lines(out)) >= len(expected), 20, "the last lines to be copied")
    assert source.terminate() == 0, source.log()
    assert sink.terminate() == 0, sink.log()
    assert [line.decode() for line in file_lines(out)] == expected
