"""The input forms of ``trustgw verify --format attestation|home|receipt`` (docs/verifying.md).

An attestation may be given as

* the gateway's own JSON, ``Attestation.to_json()``: byte fields in base64url without padding;
* the proto3 JSON of an ``Attestation`` or of a whole ``RecogniseResponse`` (``attestation``
  member), as grpcurl and ``google.protobuf.json_format`` print it: field names in lowerCamelCase
  (``keyId``) or as in the .proto (``key_id``), byte fields in standard base64 with padding;
* protobuf text format of either message, as ``protoc --decode`` and ``grpcurl -format text``
  print it.

A home-province code may be given as its ``SD1:`` text, or inside a ``ConvertedCode`` or a
``RecogniseResponse`` (``converted`` member) in the same forms. A submission receipt (an
``Attestation`` too) in the same forms, inside a ``SubmissionReceipt`` (``attestation`` member)
instead of a ``RecogniseResponse``, or as ``trustgw partner-tools publish`` keeps and prints it:
the ``--receipt-out`` file (the gateway's own JSON), the ``--json`` output (``signed_receipt``
member) or the compact JSON line of its text output. Strict: at most 64 KiB, the one
strict JSON parser (duplicate members refused), members of the message only, each field spelled
once, one canonical spelling of each byte string; every refusal is ``MALFORMED`` (``OVERSIZED``)
with a message that names the member.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal

from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from adapters.codecs.encoding import b64url_strict, parse_json
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import registry_pb2 as rpb
from gateway.tokens import HOME_CODE_PREFIX, MAX_TOKEN_BYTES, Attestation
from keys.errors import MalformedError, OversizedError

MAX_SIGNED_INPUT_BYTES = 64 * 1024
_BYTES_CHARS = 4 * MAX_TOKEN_BYTES  # a byte field's text, either alphabet


def read_attestation(text: str) -> Attestation:
    """The attestation in ``text``, in any of the module's forms; nothing is verified yet.

    Raises :class:`MalformedError` or :class:`OversizedError`.
    """
    fields = _unwrapped(_bounded(text), pb.RecogniseResponse, "attestation", pb.Attestation)
    return _attestation(fields, "attestation")


def read_receipt(text: str) -> Attestation:
    """The signed submission receipt in ``text``, in any of the module's forms; nothing is
    verified yet.

    Raises :class:`MalformedError` or :class:`OversizedError`.
    """
    stripped = _bounded(text)
    if stripped.startswith("{"):
        obj = _json_object(stripped, "the input")
        if SIGNED_RECEIPT_MEMBER in obj:  # `partner-tools publish --json`
            return _attestation(_fields(_publish_output(obj), _ATTESTATION, "a receipt"), "receipt")
    fields = _unwrapped(stripped, rpb.SubmissionReceipt, "attestation", pb.Attestation)
    return _attestation(fields, "receipt")


def read_home_code(text: str) -> str:
    """The ``SD1:`` code in ``text``: the code itself, or inside a ConvertedCode or response.

    Raises :class:`MalformedError` or :class:`OversizedError`.
    """
    stripped = _bounded(text)
    if stripped.startswith(HOME_CODE_PREFIX):
        return stripped
    fields = _unwrapped(stripped, pb.RecogniseResponse, "converted", pb.ConvertedCode)
    return _text(_required(fields, "code", "ConvertedCode"), "converted code")


# What ``trustgw partner-tools publish --json`` prints (gateway/cli/_partner_rpc.py): the
# receipt's unsigned copy (not read) and the signed receipt, in the gateway's own JSON.
SIGNED_RECEIPT_MEMBER = "signed_receipt"
PUBLISH_OUTPUT_MEMBERS = frozenset(
    {
        "kind", "region", "digest", "accepted_at", "duplicate", "request_id",
        "version", "keys_added", "keys_removed", "keys_kept", "anchors_rotated",
        "kid", "revoked_at", "batch_id", "codes", "holders", "conversions_revoked",
        SIGNED_RECEIPT_MEMBER,
    }
)  # fmt: skip
_ATTESTATION = pb.Attestation.DESCRIPTOR


def _publish_output(obj: Mapping[str, Any]) -> dict[str, Any]:
    for member in obj:
        if member not in PUBLISH_OUTPUT_MEMBERS:
            raise MalformedError(f"{member[:40]!r} is not a member of the publish output")
    signed = obj[SIGNED_RECEIPT_MEMBER]
    if signed is None:
        raise MalformedError("the publish output carries no signed receipt (signed_receipt null)")
    if not isinstance(signed, dict):
        raise MalformedError("the publish output's signed_receipt is not a JSON object")
    return signed


def _attestation(fields: Mapping[str, Any], what: str) -> Attestation:
    return Attestation(
        payload=_bytes(_required(fields, "payload", what), f"{what} payload"),
        kid=_text(_required(fields, "key_id", what), f"{what} key_id"),
        alg=_text(_required(fields, "alg", what), f"{what} alg"),
        signature=_bytes(_required(fields, "signature", what), f"{what} signature"),
    )


# --- helpers ----------------------------------------------------------------------------------


def _unwrapped(
    text: str,
    container: type[pb.RecogniseResponse] | type[rpb.SubmissionReceipt],
    member: Literal["attestation", "converted"],
    kind: type[pb.Attestation] | type[pb.ConvertedCode],
) -> dict[str, Any]:
    """The fields (by proto name) of the ``kind`` message in ``text``: the message itself, or
    the ``member`` of a ``container`` message; as JSON (either spelling) or text format."""
    outer, inner = container.DESCRIPTOR.name, kind.DESCRIPTOR.name
    what = f"{'an' if inner[0] in 'AEIOU' else 'a'} {inner}"
    if not text.startswith(("{", "[")):
        message = _text_format(text, (container, kind), what)
        fields = {field.name: value for field, value in message.ListFields()}
        if not isinstance(message, container):
            return fields
        if member not in fields:  # a message member is listed only when set
            raise MalformedError(_absent(outer, member, fields))
        return {field.name: value for field, value in fields[member].ListFields()}
    obj = _json_object(text, "the input")
    if member in obj:
        _fields(obj, container.DESCRIPTOR, f"a {outer}")
        obj = _json_object_member(obj, member, outer)
    elif _is_container(obj, container.DESCRIPTOR, kind.DESCRIPTOR):
        fields = _fields(obj, container.DESCRIPTOR, f"a {outer}")
        raise MalformedError(_absent(outer, member, fields))
    return _fields(obj, kind.DESCRIPTOR, what)


def _bounded(text: str) -> str:
    stripped = text.strip().lstrip("\ufeff")
    if len(stripped.encode("utf-8", "surrogatepass")) > MAX_SIGNED_INPUT_BYTES:
        raise OversizedError(f"the input is larger than {MAX_SIGNED_INPUT_BYTES} bytes")
    return stripped


def _json_object(text: str, what: str) -> dict[str, Any]:
    value = parse_json(text.encode("utf-8", "surrogatepass"), limit=MAX_SIGNED_INPUT_BYTES)
    if not isinstance(value, dict):
        raise MalformedError(f"{what} is not a JSON object")
    return value


def _json_object_member(obj: Mapping[str, Any], name: str, outer: str) -> dict[str, Any]:
    value = obj[name]
    if not isinstance(value, dict):
        raise MalformedError(f"the {outer} member {name!r} is not a JSON object")
    return value


def _is_container(obj: Mapping[str, Any], container: Descriptor, kind: Descriptor) -> bool:
    """A container message without the member asked for (a refused code, a show-mode answer):
    a member of the container, and none that only the inner message has."""
    outer, inner = _names(container), _names(kind)
    return any(name in outer for name in obj) and not any(
        name in inner and name not in outer for name in obj
    )


def _names(descriptor: Descriptor) -> dict[str, str]:
    """Both JSON spellings of each field (proto name, lowerCamelCase) -> the proto name."""
    names: dict[str, str] = {}
    for field in descriptor.fields:
        names[field.name] = field.name
        names[field.json_name] = field.name
    return names


def _fields(obj: Mapping[str, Any], descriptor: Descriptor, what: str) -> dict[str, Any]:
    """``obj``'s members by proto field name; unknown members and double spellings refused."""
    names = _names(descriptor)
    fields: dict[str, Any] = {}
    for member, value in obj.items():
        field = names.get(member)
        if field is None:
            raise MalformedError(f"{member[:40]!r} is not a member of {what}")
        if field in fields:
            raise MalformedError(f"{what} spells its member {field!r} twice")
        fields[field] = value
    return fields


def _required(fields: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in fields:
        raise MalformedError(f"the {what} lacks {name!r}")
    return fields[name]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedError(f"the {what} is not a non-empty string")
    return value


def _bytes(value: Any, what: str) -> bytes:
    """Standard base64 with ``=`` padding (RFC 4648 §4, as proto3 JSON writes bytes) or base64url
    without padding (§5, as ``Attestation.to_json`` does), each in its canonical spelling."""
    if isinstance(value, bytes):  # from text format: the bytes themselves
        return value
    if not isinstance(value, str):
        raise MalformedError(f"the {what} is not a base64 string")
    if len(value) > _BYTES_CHARS:
        raise OversizedError(f"the {what} is longer than {_BYTES_CHARS} characters")
    if not any(char in value for char in "+/="):
        try:
            return b64url_strict(value, limit=_BYTES_CHARS)
        except MalformedError as exc:
            raise MalformedError(f"the {what} is not base64: {exc.message}") from None
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedError(
            f"the {what} is neither padded standard base64 nor unpadded base64url"
        ) from None
    if base64.b64encode(data).decode("ascii") != value:
        raise MalformedError(f"the {what} is not in canonical padded standard base64")
    return data


def _text_format(text: str, kinds: tuple[type[Message], ...], what: str) -> Message:
    """The first of ``kinds`` that ``text`` parses as (protobuf text format, strict)."""
    errors = []
    for kind in kinds:
        message = kind()
        try:
            text_format.Parse(text, message)
        except text_format.ParseError as exc:
            errors.append(f"{kind.DESCRIPTOR.name}: {str(exc)[:80]}")
            continue
        return message
    raise MalformedError(
        f"the {what} is neither JSON, nor protobuf text format ({'; '.join(errors)})"
    )


def _absent(outer: str, member: str, fields: Mapping[str, Any]) -> str:
    """Why an ``outer`` message is refused: it lacks ``member`` (a response names its reason)."""
    what = "converted code" if member == "converted" else member
    reason, message = fields.get("reason"), fields.get("message")
    because = f" (reason {reason})" if isinstance(reason, str) and reason else ""
    said = f": {message[:120]}" if isinstance(message, str) and message else ""
    return f"the {outer} carries no {what}{because}{said}"


__all__ = ["MAX_SIGNED_INPUT_BYTES", "read_attestation", "read_home_code", "read_receipt"]
