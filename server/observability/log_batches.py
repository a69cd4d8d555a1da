"""The gateway's log handler: the access log's lines written a batch at a time.

The access log writes a line per call, and a line written alone is a write system
call (on a pipe to a container runtime, a wake-up of its reader too). So the lines of
one logger (`ai_service.access`) below WARNING are held and written together: when the
next would pass `PIPE_BUF` bytes (a pipe's writes up to that size are never split, so
the lines of several workers sharing one stderr never interleave), when any other line
comes (it keeps its place, and is seen at once), `FLUSH_SECONDS` after the first held
line, and when the process stops (`logging.shutdown`).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import TextIO

#: Bytes a pipe writes whole.
PIPE_BUF = select.PIPE_BUF
#: The longest a held line waits.
FLUSH_SECONDS = 0.2


class BatchingHandler(logging.StreamHandler[TextIO]):
    """A stream handler that holds the lines of `batched` (a logger's name) a moment."""

    def __init__(self, stream: TextIO, batched: str) -> None:
        super().__init__(stream)
        self._batched = batched
        self._held: list[str] = []
        self._held_bytes = 0
        self._due = threading.Event()  # set when the first line is held
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_when_due, name="log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (`Handler.handle`).
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        size = len(line) if line.isascii() else len(line.encode())
        if self._held_bytes + size > PIPE_BUF:
            self._write_held()
        self._held.append(line)
        self._held_bytes += size
        if record.name != self._batched or record.levelno >= logging.WARNING:
            self._write_held()
        elif len(self._held) == 1:
            self._due.set()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_held()
            super().flush()

    def close(self) -> None:
        self._closed = True
        self._due.set()
        self.flush()
        super().close()

    def _write_held(self) -> None:
        if self._held:
            try:
                self.stream.write("".join(self._held))
                self.stream.flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": "writing log lines failed"}))
            self._held.clear()
            self._held_bytes = 0

    def _flush_when_due(self) -> None:
        while not self._closed:
            self._due.wait()
            self._due.clear()
            if not self._closed:
                time.sleep(FLUSH_SECONDS)
            self.flush()
