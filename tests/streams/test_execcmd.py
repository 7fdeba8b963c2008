"""The --exec line protocol against real commands: buffered filters, NUL mode, answers that do not
match, commands that fail or hang."""

from __future__ import annotations

import pytest

from kctl.errors import StreamError
from kctl.streams.execcmd import ExecCommand, parse_decision


def test_a_stdio_filter_answers_line_by_line():
    cmd = ExecCommand("tr a-z A-Z", timeout=5)
    try:
        assert cmd.run([b"abc", b"", b"x y"]) == [b"ABC", b"", b"X Y"]
        values = [b"v%d" % i for i in range(20_000)]  # more than a pipe holds in either direction
        assert cmd.run(values) == [v.upper() for v in values]
    finally:
        cmd.close()


def test_nul_mode_carries_newlines():
    cmd = ExecCommand("tr a-z A-Z", null=True, timeout=5)
    try:
        assert cmd.run([b"two\nlines", b"one"]) == [b"TWO\nLINES", b"ONE"]
    finally:
        cmd.close()


def test_values_with_the_delimiter_are_refused():
    cmd = ExecCommand("cat", timeout=5)
    try:
        with pytest.raises(StreamError, match="--null"):
            cmd.check_value(b"a\nb", "t-0@3")
        cmd.check_value(b"ab", "t-0@3")
    finally:
        cmd.close()


def test_a_command_that_cannot_start_is_reported_at_once():
    with pytest.raises(StreamError, match="status 127 at start"):
        ExecCommand("no-such-command-kctl-test", timeout=5)


def test_a_command_that_dies_midway():
    cmd = ExecCommand("head -n 1", timeout=5)
    try:
        with pytest.raises(StreamError, match="after answering"):
            cmd.run([b"a", b"b", b"c"])
    finally:
        cmd.close()


def test_a_command_that_never_answers_times_out():
    cmd = ExecCommand("cat > /dev/null", timeout=0.5)
    try:
        with pytest.raises(StreamError, match="gave no answer"):
            cmd.run([b"a"])
    finally:
        cmd.close()


def test_too_many_answers():
    cmd = ExecCommand("read x; printf '1\\n2\\n3\\n'; cat", timeout=5)  # one write: three answers to one line
    try:
        with pytest.raises(StreamError, match="exactly one line"):
            cmd.run([b"a"])
    finally:
        cmd.close()


@pytest.mark.parametrize("answer,keep", [(b"1", True), (b" TRUE ", True), (b"keep", True), (b"0", False),
                                         (b"", False), (b"drop", False), (b"No", False)])
def test_filter_decisions(answer, keep):
    assert parse_decision(answer, "t-0@1") is keep


def test_unknown_filter_decision():
    with pytest.raises(StreamError, match="must answer"):
        parse_decision(b"maybe", "t-0@1")
