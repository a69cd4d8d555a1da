"""The log handler that writes the access log's lines a batch at a time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from ai_service.observability.log_batches import FLUSH_SECONDS, PIPE_BUF, BatchingHandler


class _Writes:
    """A stream that keeps each write apart, as the system calls it would make."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def writes() -> Iterator[_Writes]:
    stream = _Writes()
    handler = BatchingHandler(stream, batched="test.access")  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    loggers = [logging.getLogger(name) for name in ("test.access", "test.other")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield stream
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


def test_access_lines_wait_for_the_next_other_line_and_keep_their_order(writes: _Writes) -> None:
    logging.getLogger("test.access").info("call 1")
    logging.getLogger("test.access").info("call 2")
    assert writes.writes == []
    logging.getLogger("test.other").info("listening")
    assert writes.writes == ["test.access call 1\ntest.access call 2\ntest.other listening\n"]


def test_an_access_warning_is_written_at_once(writes: _Writes) -> None:
    logging.getLogger("test.access").warning("call failed")
    assert writes.writes == ["test.access call failed\n"]


def test_held_lines_are_written_after_a_moment(writes: _Writes) -> None:
    logging.getLogger("test.access").info("call")
    deadline = time.monotonic() + 10 * FLUSH_SECONDS + 5
    while not writes.writes:
        assert time.monotonic() < deadline, "the held line was never written"
        time.sleep(0.01)
    assert writes.writes == ["test.access call\n"]


def test_no_write_is_larger_than_a_pipe_writes_whole(writes: _Writes) -> None:
    access = logging.getLogger("test.access")
    lines = [f"call {i} {'é' * 100}" for i in range(200)]  # 2 bytes a character
    for line in lines:
        access.info(line)
    logging.getLogger("test.other").info("done")
    assert len(writes.writes) > 1
    assert all(len(write.encode()) <= PIPE_BUF for write in writes.writes)
    assert all(write.endswith("\n") for write in writes.writes)  # lines are never split
    written = "".join(writes.writes).splitlines()
    assert written == [f"test.access {line}" for line in lines] + ["test.other done"]


def test_closing_writes_what_is_held() -> None:
    stream = _Writes()
    handler = BatchingHandler(stream, batched="test.access")  # type: ignore[arg-type]
    handler.handle(logging.makeLogRecord({"name": "test.access", "msg": "call", "levelno": 20}))
    handler.close()
    assert stream.writes == ["call\n"]
