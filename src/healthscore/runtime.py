"""Process settings that the command line and the service apply before any work.

Arrow's default memory pool on Linux is mimalloc. A backfill allocates and frees
hundreds of megabytes per batch of dates, and with mimalloc much of its time went
to the kernel. On a 2-CPU virtual machine, the backfill of benchmarks/backfill.py
(2 M events, 52 dates) used 3.0 to 3.4 s of system CPU time with mimalloc and 1.4 s
with jemalloc. It took 5.2 to 5.6 s with mimalloc and 3.7 to 4.0 s with jemalloc.
One scoring run of 20 M events took 3.9 to 4.1 s against 3.3 to 3.7 s.
"""

from __future__ import annotations

import logging
import os

# pyarrow is imported inside the functions, so that importing this module (as the
# command line does for its help output) does not load it.

__all__ = ["POOL_VARIABLE", "configure_process", "log_memory_pool"]

logger = logging.getLogger(__name__)

#: Arrow's own setting of its memory pool; when it is set, healthscore keeps it.
POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def configure_process() -> None:
    """Make jemalloc Arrow's default memory pool, unless the user chose a pool.

    Nothing changes when ARROW_DEFAULT_MEMORY_POOL is set or when this pyarrow
    build has no jemalloc.
    """
    if os.environ.get(POOL_VARIABLE):
        return
    import pyarrow as pa

    if "jemalloc" not in pa.supported_memory_backends():
        return
    pa.set_memory_pool(pa.jemalloc_memory_pool())


def log_memory_pool() -> None:
    """Log Arrow's memory pool at DEBUG, and warn about an unknown chosen pool.

    The pool is set before logging starts, so the command line calls this once its
    log handler is in place.
    """
    import pyarrow as pa

    pool = pa.default_memory_pool().backend_name
    chosen = os.environ.get(POOL_VARIABLE)
    if not chosen:
        logger.debug("Arrow allocates from its %s memory pool", pool)
        return
    supported = pa.supported_memory_backends()
    if chosen not in supported:
        logger.warning(
            "%s=%s is not a memory pool of this pyarrow build, so Arrow uses %s; "
            "set it to one of %s or unset it",
            POOL_VARIABLE,
            chosen,
            pool,
            ", ".join(supported),
        )
        return
    logger.debug("Arrow allocates from its %s memory pool (%s)", pool, POOL_VARIABLE)
