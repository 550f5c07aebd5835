"""Online codes, the I/O half: per-partner settings, the circuit breaker, the status cache and
the HTTPS client that asks a region's endpoint (docs/partners.md §9; the pure half is
:mod:`adapters.online`)."""
