"""The project's one error taxonomy.

Every error the gateway raises on purpose derives from :class:`GatewayError`; each class carries
its own stable ``reason``, the name of its gRPC status (a string: this module imports no grpc)
and the sentence an operator reads. Three families, and the operator's own input:
:class:`ForeignDataError` (a foreign code or other partner input is bad; while recognising a
code it becomes a *decision*, "not recognised, because ...", not an RPC error),
:class:`RegistryError` (the registry's state forbids the request: unknown region, rollback ...),
:class:`ConfigurationError` (the gateway is not set up correctly) and :class:`InputError` (a
value an operator typed or handed over is not acceptable).

The catalogue is this package: the classes of one family may live in a module of their own
(:mod:`keys.errors.online`, the online partners' failures) and are re-exported here, so that
``from keys.errors import X`` names every one.
"""

from keys.errors._base import *  # noqa: F403  (the catalogue names every class)
from keys.errors.online import *  # noqa: F403
