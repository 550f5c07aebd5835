"""Persistence of the key registry, partner submissions, conversions and personal records.

The package, by aggregate: ``regions`` (regions and their keys), ``trust`` (anchors, key sets,
submissions, revocations), ``audit``, ``trustlists``, ``conversions``, ``personal`` (stock
conversions, the recognition log, purges), ``stockoutput`` (what each batch job's rows
produced). Each holds the SQL of its aggregate as plain
functions of a :class:`keys.store.dbapi.Connection`, the same SQL on both backends; the rules of
trust changes are pure plans in :mod:`keys.trustplans`. :class:`StoreFacade` holds every role
method once over a backend's read and write. Two backends: ``sqlite`` (one connection on one
thread), ``schema`` (its migrations) and :class:`SQLiteStore`, the embedded default; ``pgdb``
(a few connections, the write lock), ``pgschema`` (its migrations, rolling upgrades,
notifications) and :class:`PostgresStore`, for replicas. :func:`keys.store.factory.open_store`
opens either from the ``database`` setting. The roles consumers depend on are the protocols of
:mod:`keys.store.protocols`.
"""

from __future__ import annotations

from keys.store.facade import StoreFacade
from keys.store.postgres import PostgresStore
from keys.store.protocols import (
    AuditStore,
    ConversionStore,
    DeclarationStore,
    GatewayKeyStore,
    HealthStore,
    HomeCodeStore,
    PlaceStore,
    PurgeStore,
    RecognitionStore,
    RegistryData,
    RegistryStore,
    StockOutputStore,
    StockStore,
    Store,
    TrustListStore,
    TrustStore,
)
from keys.store.rows import BATCH_SHAPES, DEFAULT_ACTOR, MAX_LIST_LIMIT, batch_shapes
from keys.store.schema import MIGRATIONS, SCHEMA_VERSION, CodeKeys
from keys.store.sqlitestore import SQLiteStore

__all__ = [
    "BATCH_SHAPES",
    "DEFAULT_ACTOR",
    "MAX_LIST_LIMIT",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AuditStore",
    "CodeKeys",
    "ConversionStore",
    "DeclarationStore",
    "GatewayKeyStore",
    "HealthStore",
    "HomeCodeStore",
    "PlaceStore",
    "PostgresStore",
    "PurgeStore",
    "RecognitionStore",
    "RegistryData",
    "RegistryStore",
    "SQLiteStore",
    "StockOutputStore",
    "StockStore",
    "Store",
    "StoreFacade",
    "TrustListStore",
    "TrustStore",
    "batch_shapes",
]
