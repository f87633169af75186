"""Random (version 4) UUIDs for cards, suggestions, resources and request ids, cheaply.

`uuid.uuid4()` makes one `getrandom` system call per id. Under gunicorn's threads each call
gives up the GIL and must wait to get it back, and one card response needs several ids: the
profile showed `uuid4` as the largest single cost of a call. Here the same kernel randomness
is read 4 KiB at a time and handed out 16 bytes per id. The buffer is dropped in a forked
child, so two workers never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading
import uuid

_BATCH = 4096
_lock = threading.Lock()
_buffer = b""
_offset = 0


def _reset() -> None:
    global _buffer, _offset, _lock
    _buffer, _offset = b"", 0
    _lock = threading.Lock()  # a lock held by another thread at fork time is never released


os.register_at_fork(after_in_child=_reset)


def uuid4() -> uuid.UUID:
    global _buffer, _offset
    with _lock:
        if _offset + 16 > len(_buffer):
            _buffer, _offset = os.urandom(_BATCH), 0
        raw = _buffer[_offset : _offset + 16]
        _offset += 16
    return uuid.UUID(bytes=raw, version=4)
