"""Helpers the tests import (never ``conftest``, which pytest owns): see each module.

``aio``: run a coroutine, serve a real gateway; ``codes``: a partner's codes around a time;
``wait``: wait for a condition with a deadline instead of sleeping; ``clock``: the suite's one
reading of the real clock, for tests against a real server; ``conformance``: where the shared
conformance vectors are, and whether their absence skips or fails (``TRUSTGW_REQUIRE_CONFORMANCE``).
"""
