"""keys/errors/ is the one catalogue: every error class the project raises on purpose is
defined there, under the one root, with its own reason and a gRPC status name."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import adapters
import gateway
import keys
from keys import errors
from keys.errors import GatewayError

STATUS_NAMES = {
    "INVALID_ARGUMENT", "FAILED_PRECONDITION", "PERMISSION_DENIED", "UNAUTHENTICATED",
    "NOT_FOUND", "ALREADY_EXISTS", "UNAVAILABLE", "ABORTED", "DATA_LOSS", "RESOURCE_EXHAUSTED",
    "UNIMPLEMENTED",
}  # fmt: skip


def _project_modules() -> list[str]:
    names = []
    for package in (keys, adapters, gateway):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith(("_pb2", "_pb2_grpc", "__main__")):
                continue
            names.append(info.name)
    return names


def _all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    todo = [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def _in_catalogue(cls: type) -> bool:
    return cls.__module__ == "keys.errors" or cls.__module__.startswith("keys.errors.")


def _project_exception_classes() -> list[type]:
    for name in _project_modules():
        importlib.import_module(name)
    classes = []
    for name in _project_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Exception)
                and value.__module__ == name
            ):
                classes.append(value)
    return classes


def test_every_project_exception_class_is_defined_in_the_catalogue() -> None:
    outside = sorted(
        f"{c.__module__}.{c.__qualname__}"
        for c in _project_exception_classes()
        if not _in_catalogue(c)
    )
    assert outside == [], "define these in keys/errors/: " + ", ".join(outside)


def test_every_catalogue_class_is_named_by_the_catalogue() -> None:
    """A family in a module of its own is re-exported: ``from keys.errors import X`` names all."""
    missing = sorted(
        c.__qualname__
        for c in _project_exception_classes()
        if _in_catalogue(c) and getattr(errors, c.__name__, None) is not c
    )
    assert missing == []


def test_every_catalogue_class_derives_from_the_root() -> None:
    defined = [c for c in _project_exception_classes() if _in_catalogue(c)]
    assert len(defined) > 40
    assert all(issubclass(c, GatewayError) for c in defined)


@pytest.mark.parametrize(
    "cls",
    sorted(_all_subclasses(GatewayError) | {GatewayError}, key=lambda c: c.__name__),
    ids=lambda c: c.__name__,
)
def test_each_class_has_its_own_reason_a_status_and_a_message(cls: type[GatewayError]) -> None:
    if not _in_catalogue(cls):
        pytest.skip("defined by a test")
    assert cls.reason.isupper() and cls.reason.replace("_", "").isalpha()
    assert cls.grpc_status in STATUS_NAMES
    assert cls.default_message
    parents = [b for b in cls.__mro__[1:] if issubclass(b, GatewayError)]
    assert all(cls.reason != p.reason for p in parents), "a subclass names its own reason"


@pytest.mark.parametrize(
    ("name", "reason", "status"),
    [
        ("UsageError", "USAGE", "FAILED_PRECONDITION"),
        ("RowError", "ROW_INVALID", "INVALID_ARGUMENT"),
        ("PermissionDeniedError", "PERMISSION_DENIED", "PERMISSION_DENIED"),
        ("UnauthenticatedError", "UNAUTHENTICATED", "UNAUTHENTICATED"),
        ("GatewayRpcError", "RPC_FAILED", "FAILED_PRECONDITION"),
        ("InvalidConfigError", "CONFIG_INVALID", "FAILED_PRECONDITION"),
    ],
)
def test_the_moved_classes_keep_their_reason_and_status(
    name: str, reason: str, status: str
) -> None:
    cls = getattr(errors, name)
    assert (cls.reason, cls.grpc_status) == (reason, status)


def test_a_row_error_carries_the_rows_own_reason_and_column() -> None:
    exc = errors.RowError("BAD_DATE", "resident_since: not a date (YYYY-MM-DD)", "resident_since")
    assert (exc.reason, exc.column, str(exc)) == (
        "BAD_DATE",
        "resident_since",
        "resident_since: not a date (YYYY-MM-DD)",
    )
    assert isinstance(exc, errors.InputError)


def test_the_sdk_keeps_its_public_error_name() -> None:
    # SDK users write `except gateway.sdk.GatewayRpcError`: the same class as the catalogue's.
    from gateway.sdk import GatewayRpcError

    assert GatewayRpcError is errors.GatewayRpcError
    assert errors.GatewayRpcError("UNAVAILABLE", "down").retryable
    assert not errors.GatewayRpcError("INVALID_ARGUMENT", "bad", "MALFORMED").retryable
