"""The catalogue's root, its families' bases and the classes not kept in a module of their
own; import them from :mod:`keys.errors`."""


from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    reason: ClassVar[str] = "GATEWAY_ERROR"
    grpc_status: ClassVar[str] = "FAILED_PRECONDITION"
    default_message: ClassVar[str] = "the gateway refused the request"

    def __init__(self, message: str | None = None, **metadata: str) -> None:
        self.message = message or self.default_message
        self.metadata: dict[str, str] = {k: str(v) for k, v in metadata.items()}
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


# --- bad foreign data ----------------------------------------------------------------------


class ForeignDataError(GatewayError):
    """A foreign code or partner submission is not acceptable."""

    reason = "FOREIGN_DATA_INVALID"
    grpc_status = "INVALID_ARGUMENT"
    default_message = "the submitted data is not acceptable"


class MalformedError(ForeignDataError):
    """The input could not be decoded: not the format, a bad encoding, a bad or missing member."""

    reason = "MALFORMED"
    default_message = "the code could not be decoded"


class OversizedError(MalformedError):
    """An input, or a decode step's output, exceeds its size limit."""

    reason = "OVERSIZED"
    default_message = "the code, or a part of it, exceeds the size limit"


class RegionUnknownError(ForeignDataError):
    """The code's prefix names no partner region (or the region named is not one)."""

    reason = "REGION_UNKNOWN"
    default_message = "the code does not belong to any partner region"


class RegionDisabledError(ForeignDataError):
    """The code's region is known but its recognition is switched off by the operator."""

    reason = "REGION_DISABLED"
    default_message = "recognition of this partner region is disabled"


class AlgorithmUnsupportedError(ForeignDataError):
    """A signature or key algorithm the gateway does not accept (``none``, HS256, a curve ...)."""

    reason = "ALGORITHM_UNSUPPORTED"
    default_message = "the signature algorithm is not accepted"


class KeyAlgorithmMismatchError(AlgorithmUnsupportedError):
    """A code-signing key of an algorithm its region's codes are never signed with (refused when
    registered: every code it signed would be ``ALGORITHM_UNSUPPORTED``)."""

    reason = "KEY_ALGORITHM_MISMATCH"
    default_message = "the key's algorithm is not one the region's codes are signed with"


class KeyUnknownError(ForeignDataError):
    """No key of the code's region has the key id (or, when it names none, none verifies it)."""

    reason = "KEY_UNKNOWN"
    default_message = "the code was signed with a key the gateway does not know for that region"


class KeyRevokedError(ForeignDataError):
    """The key that signed was revoked at or before the time the code was issued."""

    reason = "KEY_REVOKED"
    default_message = "the code was signed with a key revoked before the code was issued"


class KeyNotValidError(ForeignDataError):
    """The signing key was outside its validity window when the code (or output) was issued."""

    reason = "KEY_NOT_VALID"
    default_message = "the signing key was not valid when the code was issued"


class SignatureInvalidError(ForeignDataError):
    """The signature does not verify over the signed bytes with the key named."""

    reason = "SIGNATURE_INVALID"
    default_message = "the signature does not verify"


class CodeExpiredError(ForeignDataError):
    """The code (or a signed output) is past its expiry at the time it is checked."""

    reason = "CODE_EXPIRED"
    default_message = "the code has expired"


class CodeTooOldError(ForeignDataError):
    """The code was issued longer ago than its region's maximum age allows."""

    reason = "CODE_TOO_OLD"
    default_message = "the code is older than the region's maximum age"


class CodeNotYetValidError(ForeignDataError):
    """The code (or a signed output) states an issue time after the time it is checked."""

    reason = "CODE_NOT_YET_VALID"
    default_message = "the code is issued in the future"


class CodeRevokedError(ForeignDataError):
    """The code, or its holder, is on a revocation batch effective before the check."""

    reason = "CODE_REVOKED"
    default_message = "the code, or its holder, has been revoked"


class KeyUsageError(ForeignDataError):
    """The signer's certificate or key may not sign this kind of code (EU DCC key usage)."""

    reason = "KEY_USAGE"
    default_message = "the signer is not allowed to sign this kind of code"


class ThresholdNotMetError(ForeignDataError):
    """A signed statement lacks valid signatures from a threshold of the trusted anchor keys."""

    reason = "THRESHOLD_NOT_MET"
    grpc_status = "PERMISSION_DENIED"
    default_message = "the statement is not signed by a threshold of the region's anchor keys"


class RegionForbiddenError(ForeignDataError):
    """A caller wrote, or an anchor signed, for a region that is not its own."""

    reason = "REGION_FORBIDDEN"
    grpc_status = "PERMISSION_DENIED"
    default_message = "a partner may only write its own region"


class KeySetExpiredError(ForeignDataError):
    """A key set past its ``expires`` time: it is not applied."""

    reason = "KEYSET_EXPIRED"
    default_message = "the key set has expired"


class TrustListExpiredError(ForeignDataError):
    """Freeze protection: a trust list past its expiry is not used."""

    reason = "TRUSTLIST_EXPIRED"
    default_message = "the trust list has expired"


class TrustListNotYetValidError(ForeignDataError):
    """A trust list checked before the moment it says it was signed."""

    reason = "TRUSTLIST_NOT_YET_VALID"
    default_message = "the trust list is not valid yet (check the verifier's clock)"


class TrustListRollbackError(ForeignDataError):
    """A trust list older than the one the verifier already trusts (rollback protection)."""

    reason = "TRUSTLIST_ROLLBACK"
    default_message = "the trust list is older than the one already trusted"


class TrustListConflictError(ForeignDataError):
    """Two different trust lists claim the same version, or a delta does not add up."""

    reason = "TRUSTLIST_CONFLICT"
    default_message = "the trust list contradicts the one already trusted for that version"


# --- operator input ------------------------------------------------------------------------


class InputError(GatewayError):
    """A value an operator gave (a command-line option, a file) is not acceptable."""

    reason = "INPUT_INVALID"
    grpc_status = "INVALID_ARGUMENT"
    default_message = "the value is not acceptable"


class TimeInvalidError(InputError):
    """Not a time in one of the accepted forms (see :func:`keys.timeutil.parse_time`)."""

    reason = "TIME_INVALID"
    default_message = "not a time in an accepted form"


class TimeOffsetRequiredError(TimeInvalidError):
    """An ISO 8601 time without a UTC offset: ambiguous (UTC? China Standard Time?)."""

    reason = "TIME_OFFSET_REQUIRED"
    default_message = "an ISO 8601 time needs a UTC offset (Z or +08:00)"


class UsageError(GatewayError):
    """The command line or an input file is unusable (the CLI exits with status 2)."""

    reason = "USAGE"
    default_message = "invalid usage"


class RowError(InputError):
    """One row of a stock-conversion file cannot be converted (docs/stock-conversion.md): the
    row's own ``reason`` (``BAD_DATE`` ...), the ``column`` at fault; never the row's values."""

    reason = "ROW_INVALID"
    default_message = "the row cannot be converted"

    def __init__(self, reason: str, message: str, column: str = "") -> None:
        super().__init__(message)
        self.reason = reason  # type: ignore[misc]
        self.column = column


# --- bad requests --------------------------------------------------------------------------


class InvalidRequestError(GatewayError):
    """The request itself (not a code it carries) is unacceptable: refused before any decision
    (an RPC error in unary calls, an answer in its place in a stream: docs/api.md)."""

    reason = "INVALID_REQUEST"
    grpc_status = "INVALID_ARGUMENT"
    default_message = "the request is not valid"


class RequestMalformedError(InvalidRequestError):
    """The request's bytes are not a protobuf message of the method's request type."""

    reason = "REQUEST_MALFORMED"
    default_message = "the request is not a valid protobuf message of the method's request type"


class RequestTooLargeError(InvalidRequestError):
    """The request's bytes exceed the method's size limit (checked before any decoding)."""

    reason = "REQUEST_TOO_LARGE"
    grpc_status = "RESOURCE_EXHAUSTED"
    default_message = "the request is larger than the method accepts"


class MethodUnknownError(InvalidRequestError):
    """The call names a method (service and method path) that the gateway does not serve."""

    reason = "METHOD_UNKNOWN"
    grpc_status = "UNIMPLEMENTED"
    default_message = "the gateway serves no such method"


class DeclarationInvalidError(RowError, InvalidRequestError):
    """An arrival declaration refused for a field, with that field's own reason, as a row's."""

    reason = "DECLARATION_INVALID"
    default_message = "the declaration is not valid"


class RateLimitedError(InvalidRequestError):
    """The caller asked more often than its allowance (per partner region; per tracer and UTC
    day for tracing queries): retry later."""

    reason = "RATE_LIMITED"
    grpc_status = "RESOURCE_EXHAUSTED"
    default_message = "too many requests from this caller: retry later"


class TraceWindowTooLongError(InvalidRequestError):
    """A tracing query whose window is empty, reversed or longer than allowed."""

    reason = "TRACE_WINDOW_TOO_LONG"
    default_message = "the tracing window is empty or longer than allowed"


class TraceMarginTooLongError(InvalidRequestError):
    """A contacts query whose margin is negative or longer than allowed."""

    reason = "TRACE_MARGIN_TOO_LONG"
    default_message = "the contact margin is negative or longer than allowed"


class TraceResultTooLargeError(InvalidRequestError):
    """A tracing query that finds more results than one answer may carry."""

    reason = "TRACE_RESULT_TOO_LARGE"
    grpc_status = "FAILED_PRECONDITION"
    default_message = "the query finds more results than one answer may carry: narrow it"


# --- who may call --------------------------------------------------------------------------


class PermissionDeniedError(GatewayError):
    """The caller's certificate names a role (or region) that may not make this call."""

    reason = "PERMISSION_DENIED"
    grpc_status = "PERMISSION_DENIED"
    default_message = "the caller's certificate does not allow this call"


class UnauthenticatedError(GatewayError):
    """The call carries no client certificate the gateway recognises."""

    reason = "UNAUTHENTICATED"
    grpc_status = "UNAUTHENTICATED"
    default_message = "the call carries no client certificate the gateway recognises"


class CertificateDeniedError(UnauthenticatedError):
    """The caller's client certificate is on the gateway's deny list (``trustgw pki deny`` /
    ``pki revoke``)."""

    reason = "CERTIFICATE_DENIED"
    default_message = "this client certificate has been revoked: ask the operator for a new one"


# --- calls made by the client SDK ----------------------------------------------------------


class GatewayRpcError(GatewayError):
    """A call to the gateway failed (raised by the client SDK, :mod:`gateway.sdk`).

    ``status`` is the gRPC status name, ``reason`` the gateway's stable reason (from the
    ``google.rpc.ErrorInfo``, else the status name), ``request_id`` the call's id, ``metadata``
    the ErrorInfo's details."""

    reason = "RPC_FAILED"
    default_message = "the call to the gateway failed"

    def __init__(
        self,
        status: str,
        message: str,
        reason: str | None = None,
        request_id: str = "",
        **metadata: str,
    ) -> None:
        super().__init__(message, **metadata)
        self.status = status
        self.reason = reason or status  # type: ignore[misc]
        self.request_id = request_id

    @property
    def retryable(self) -> bool:
        """Whether retrying can help: only ``UNAVAILABLE`` means "not processed, retry"."""
        return self.status == "UNAVAILABLE"


# --- registry state ------------------------------------------------------------------------


class RegistryError(GatewayError):
    """The registry's state forbids the request."""

    reason = "REGISTRY_ERROR"
    grpc_status = "FAILED_PRECONDITION"
    default_message = "the key registry refused the change"


class NotFoundError(RegistryError):
    """The registry has no such region, key, version or entry."""

    reason = "NOT_FOUND"
    grpc_status = "NOT_FOUND"
    default_message = "no such entry in the registry"


class AlreadyExistsError(RegistryError):
    """An entry with the same identity but different content is already in the registry."""

    reason = "ALREADY_EXISTS"
    grpc_status = "ALREADY_EXISTS"
    default_message = "the entry already exists with different content"


class StoreUnavailableError(RegistryError):
    """The database could not be reached or locked: not processed, the caller may retry."""

    reason = "STORE_UNAVAILABLE"
    grpc_status = "UNAVAILABLE"
    default_message = "the registry database is not reachable"


class RollbackError(RegistryError):
    """A signed statement's version is older than the registry's (TUF rollback protection)."""

    reason = "VERSION_ROLLBACK"
    default_message = "the version is older than the current one"


class ReplayError(RollbackError):
    """A different statement with the version already in force."""

    reason = "VERSION_REPLAY"
    default_message = "a different statement with the current version was already applied"


class VersionGapError(RegistryError):
    """A key set's version is not exactly the current version plus one."""

    reason = "VERSION_GAP"
    default_message = "the version must be exactly the current version plus one"


class AnchorsMissingError(NotFoundError):
    """A statement for a region whose anchors were never installed (``trustgw partner add``)."""

    reason = "ANCHORS_MISSING"
    default_message = "the region has no trust anchors installed"


class KeyIdReusedError(AlreadyExistsError):
    """A key id already names a different key of the region (now or in the past)."""

    reason = "KEY_ID_REUSED"
    default_message = "the key id already names a different key of the region"


class BatchConflictError(AlreadyExistsError):
    """A batch id is reused for a different submission."""

    reason = "BATCH_ID_REUSED"
    default_message = "the batch id was already used for a different batch"


class KeyWindowRefusedError(RegistryError):
    """A key's validity window may not be changed that way (see :mod:`keys.keywindow`)."""

    reason = "KEY_WINDOW_REFUSED"
    default_message = "the key's validity window cannot be changed that way"


class ConcurrentChangeError(RegistryError):
    """The registry changed between reading and writing; the caller may retry."""

    reason = "CONCURRENT_CHANGE"
    grpc_status = "ABORTED"
    default_message = "the registry changed concurrently; retry"


class AuditIntegrityError(RegistryError):
    """The audit log was edited, reordered, truncated or has entries removed."""

    reason = "AUDIT_TAMPERED"
    grpc_status = "DATA_LOSS"
    default_message = "the audit log does not verify"


# --- configuration -------------------------------------------------------------------------


class ConfigurationError(GatewayError):
    """The gateway is not set up correctly."""

    reason = "CONFIGURATION"
    grpc_status = "FAILED_PRECONDITION"
    default_message = "the gateway is not configured correctly"


class PassphraseError(ConfigurationError):
    """No passphrase for the key directory, or one that does not decrypt its keys."""

    reason = "PASSPHRASE"
    default_message = (
        "no usable passphrase for the key directory: set TRUSTGW_PASSPHRASE or "
        "TRUSTGW_PASSPHRASE_FILE, or initialise with --dev"
    )


class KeyDirectoryError(ConfigurationError):
    """The key directory is missing, unreadable, malformed or has unsafe permissions."""

    reason = "KEY_DIRECTORY"
    default_message = "the key directory is missing, unreadable or has unsafe permissions"


class NoKeyringError(ConfigurationError):
    """The database holds no gateway keys and there is no key directory to import."""

    reason = "NO_GATEWAY_KEYS"
    default_message = (
        "the database holds no gateway keys: run trustgw init (with --database on a new "
        "deployment) first"
    )


class SchemaOutdatedError(ConfigurationError):
    """The database's schema is older than this code's and the caller did not ask to migrate
    (``trustgw serve`` never migrates: ``trustgw db migrate`` does)."""

    reason = "SCHEMA_OUTDATED"
    default_message = "the database needs a schema migration: run trustgw db migrate"

    def __init__(self, message: str | None = None, *, current: int = 0, expected: int = 0) -> None:
        self.current = current
        self.expected = expected
        super().__init__(message)


class InvalidConfigError(ConfigurationError):
    """The configuration has one or more problems; :attr:`problems` lists them all (each one
    printable: ``gateway.runtime.settings.Problem``)."""

    reason = "CONFIG_INVALID"
    default_message = "the configuration is not valid"

    def __init__(self, problems: Sequence[Any]) -> None:
        self.problems: tuple[Any, ...] = tuple(problems)
        super().__init__("; ".join(str(p) for p in problems) or self.default_message)


class ListenError(ConfigurationError):
    """A server socket (gRPC, metrics or probe) could not be opened (docs/operations.md,
    "Exit codes")."""

    reason = "LISTEN_FAILED"
    default_message = "cannot listen on the address configured"


class AddressInUseError(ListenError):
    """Another process holds the address a listener is configured on."""

    reason = "ADDRESS_IN_USE"
    default_message = "the address is in use by another process"


class AddressUnavailableError(ListenError):
    """The address a listener is configured on is not one of this machine's."""

    reason = "ADDRESS_UNAVAILABLE"
    default_message = "the address is not one of this machine's"


class ListenPermissionError(ListenError):
    """The process may not listen on that address (a port below 1024 without the capability)."""

    reason = "LISTEN_PERMISSION"
    default_message = "not permitted to listen on the address (a port below 1024?)"


class FilePermissionError(ConfigurationError):
    """A file the gateway needs (TLS, keys, configuration) is not readable by its user."""

    reason = "FILE_PERMISSION"
    default_message = "a file the gateway needs is not readable by its user"
