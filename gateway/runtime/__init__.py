"""A running gateway without its wire: the ``Gateway`` (open/close, refresh, health state), its
configuration and data directory, settings, background tasks, the recognition log, retention."""
