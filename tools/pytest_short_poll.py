"""pytest plugin (loaded by tools/book.py with ``-p tools.pytest_short_poll``): poll kernel channels in short slices.

Executing a cell that opens ipywidgets sometimes stalls for the whole cell timeout and then carries on normally
(seen here in about 1 of 8 nbmake runs; upstream: jupyter/nbclient#312). The reply has arrived, but the asyncio
wake-up of ``zmq`` poll for it was missed, so ``AsyncZMQSocketChannel.get_msg(timeout=600)`` only notices it when
the timeout expires. Polling in slices of at most one second finds such a message within a second; semantics are
otherwise unchanged (``Empty`` is raised only once the caller's full timeout has passed).
"""
from __future__ import annotations

from queue import Empty
from time import monotonic

from jupyter_client.channels import AsyncZMQSocketChannel

SLICE_SECONDS = 1.0
_original_get_msg = AsyncZMQSocketChannel.get_msg


async def _get_msg_in_slices(self, timeout: float | None = None):
    deadline = None if timeout is None else monotonic() + timeout
    while True:
        remaining = SLICE_SECONDS if deadline is None else max(0.0, deadline - monotonic())
        try:
            return await _original_get_msg(self, timeout=min(SLICE_SECONDS, remaining))
        except Empty:
            if deadline is not None and monotonic() >= deadline:
                raise


if not getattr(AsyncZMQSocketChannel.get_msg, "_book_short_poll", False):
    _get_msg_in_slices._book_short_poll = True
    AsyncZMQSocketChannel.get_msg = _get_msg_in_slices
