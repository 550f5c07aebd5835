"""Keep Python's cyclic garbage collector off the request path of a serving gateway.

A native profile of ``trustgw serve`` under new codes (bench/PROFILE.md) found the collector's
``gc_collect_main`` at about a fifth of the server's busy CPU: every request allocates a few
hundred container objects (protobuf messages, dataclasses, dicts of claims), so the default
first-generation threshold of 700 starts a collection every one or two requests, and each full
collection walks the whole heap: the registry's keys, the revocation index, the caches, gRPC's
and the libraries' own objects loaded at start.

:func:`settle` is called once the gateway is open and serving: it collects what start-up left,
moves every surviving object into the permanent generation (``gc.freeze``: never scanned again;
they live for the life of the process anyway) and raises the first threshold so that a collection
runs every few hundred requests instead of every one or two. Reference counting still frees all
acyclic garbage at once; only cycles wait for a collection, and a threshold of
:data:`YOUNG_THRESHOLD` objects bounds what they hold to a few megabytes.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # container allocations (net) between first-generation collections
OLDER_THRESHOLDS = (20, 10)  # the second and third generations, as counts of the one below


def settle() -> None:
    """Collect, freeze what survived start-up, and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
