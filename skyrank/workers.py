"""What every forked DataLoader worker of the project runs first: :func:`worker_init`.

A forked worker inherits the parent's Python objects, including its uncollected garbage. Collected in the worker, an
object that owns a thread of the parent runs its destructor there, where that thread does not exist. Seen in the
default test run: the rendezvous ``TCPStore`` of a failed :func:`skyrank.retrievers.distributed.launch` (kept in
reference cycles by the launcher's traceback) was collected in a DataLoader worker; its destructor joined its
server thread, which the worker lacks, and the worker aborted with ``std::system_error: Invalid argument``.

:func:`worker_init` moves everything the worker inherited to the collector's permanent generation
(:func:`gc.freeze`), so the worker only ever collects its own objects. It also stops the collector from writing to
the inherited pages, which copy-on-write would otherwise duplicate in every worker.
"""

from __future__ import annotations

import gc


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the project's DataLoaders: freeze what the worker inherited from its parent."""
    del worker_id
    gc.freeze()


__all__ = ["worker_init"]
