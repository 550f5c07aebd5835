"""What ``SIGHUP`` does to a running ``trustgw serve`` (docs/operations.md, "Reloading on
SIGHUP"): the settings are read again (file, environment, flags) for the log level, the log
format, the access log and the libraries' logs; the server certificate and key (pair-checked
before use), the client CA and the deny list of client certificates are read again and used
from the next handshake or call on. Nothing in flight is dropped; a part that fails keeps what
is served now and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import os

from gateway.grpc.server import RunningServer
from gateway.observability import AccessLog, configure_logging
from gateway.runtime import settings as config
from gateway.runtime.settings import Settings
from keys.errors import GatewayError

log = logging.getLogger("trustgw.server")


def reread(settings: Settings) -> Settings:
    """``settings`` read again: the same file (as it is now), the environment and the same
    flags. Works in a worker of ``--workers N`` too, which has the settings but not the command
    line. Raises :class:`keys.errors.InvalidConfigError`."""
    flags = {
        attr: getattr(settings, attr)
        for attr, source in settings.sources.items()
        if source.startswith("flag ")
    }
    return config.load(settings.config_file, os.environ, flags)


def reload_settings(settings: Settings, access: AccessLog) -> bool:
    """Apply the log settings as they read now; False (and a log line) when they are invalid."""
    try:
        settings = reread(settings)
    except GatewayError as exc:
        log.error("reload: the settings are not valid, keeping the current ones: %s", exc)
        return False
    configure_logging(settings.log_level, settings.log_format, settings.log_libraries)
    access.enabled = settings.log_access
    return True


async def reload_on_signal(
    requested: asyncio.Event,
    settings: Settings,
    running: RunningServer,
    access: AccessLog,
) -> None:
    """Each time ``requested`` is set (by the SIGHUP handler), reload; runs until cancelled."""
    while True:
        await requested.wait()
        requested.clear()
        ok = reload_settings(settings, access)
        # Reading and checking the files is quick but is file I/O: off the event loop.
        failed = await asyncio.to_thread(running.reload)
        if not ok:
            failed.insert(0, "settings")
        log.warning(
            "SIGHUP: reloaded%s", f", except {', '.join(failed)}" if failed else " everything"
        )
