"""Persistence of the key registry, partner submissions, conversions and personal records.

The package, by aggregate: ``regions`` (regions and their keys), ``trust`` (anchors, key sets,
submissions, revocations), ``audit``, ``trustlists``, ``conversions``, ``personal`` (stock
conversions, the recognition log, purges), ``stockoutput`` (what each batch job's rows
produced), ``schema`` (migrations). Each holds the SQL of its
aggregate as plain functions of a connection; the rules of trust changes are pure plans in
:mod:`keys.trustplans`. ``sqlite`` is the execution model (one connection on one thread, a unit
of work per hop, one error mapping) and ``sqlitestore`` the :class:`SQLiteStore` over it. The
roles consumers depend on are the protocols of :mod:`keys.store.protocols`.
"""

from __future__ import annotations

from keys.store.protocols import (
    AuditStore,
    ConversionStore,
    HealthStore,
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
    "HealthStore",
    "PurgeStore",
    "RecognitionStore",
    "RegistryData",
    "RegistryStore",
    "SQLiteStore",
    "StockOutputStore",
    "StockStore",
    "Store",
    "TrustListStore",
    "TrustStore",
    "batch_shapes",
]
