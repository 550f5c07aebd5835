"""The one strict JSON parser and the one canonical JSON of the project.

:func:`loads_strict` is how every path parses JSON that came from outside (codes, statements,
envelopes, trust files, key files, stock rows, attestation payloads): bounded in size and depth,
and refusing what JSON tolerates but a signature check must not (duplicate members, NaN and
Infinity, lone surrogates).

:func:`canonical_json` is RFC 8785 (JSON Canonicalization Scheme), exactly: members sorted by
their UTF-16 code units, no white space, UTF-8, strings escaped only where JSON requires it
(``"``, ``\\`` and the control characters, as ``\\b \\f \\n \\r \\t`` or ``\\u00xx``), numbers
written as ECMAScript writes a double. Integers must be exact doubles (``|n| <= 2**53 - 1``):
a larger integer has no exact RFC 8785 form and is refused rather than rounded. For what the
gateway signs (ASCII member names, integers in that range, no floats) this is byte for byte
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any, NoReturn

from keys.errors import MalformedError, OversizedError

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer a JSON number can carry exactly (RFC 7493 I-JSON, RFC 8785)."""

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abAB]|\\u[dD][c-fC-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedError(f"a JSON object repeats a member name ({key[:32]!r})")
        result[key] = value
    return result


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedError("a JSON number is not finite")
    return value


def _no_float(text: str) -> NoReturn:
    raise MalformedError(f"numbers must be integers, not {text[:24]!r}")


def _no_constant(name: str) -> NoReturn:
    raise MalformedError(f"JSON constant {name} is not accepted")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_float=_finite_float, parse_constant=_no_constant
)
_INTEGER_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_constant
)


def _walk(value: Any, max_depth: int, check_text: bool) -> None:
    """Refuse nesting deeper than ``max_depth`` and (if ``check_text``) lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise OversizedError(f"the JSON text is nested deeper than {max_depth} levels")
            if check_text:
                for key in item:
                    _check_text(key)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            if depth > max_depth:
                raise OversizedError(f"the JSON text is nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in item)
        elif check_text and isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    if _SURROGATE.search(text):
        raise MalformedError("a JSON string is not valid Unicode (a lone surrogate)")


def loads_strict(
    data: bytes | str,
    *,
    max_bytes: int,
    max_depth: int,
    integers_only: bool = False,
    what: str = "JSON text",
) -> Any:
    """Parse untrusted UTF-8 JSON text of at most ``max_bytes`` bytes and ``max_depth`` levels.

    Raises :class:`OversizedError` above either limit, :class:`MalformedError` for text that is
    not UTF-8 or not JSON, a member that appears twice in one object, ``NaN``/``Infinity`` or a
    number that overflows to infinity, a lone surrogate (``"\\ud800"``), an integer of more than
    4300 digits, or (with ``integers_only``) any number with a fraction or an exponent. ``what``
    names the input in the messages. Takes no time input.
    """
    if isinstance(data, str):
        if len(data) > max_bytes:  # a str is at least as many bytes as characters
            raise OversizedError(f"the {what} is larger than {max_bytes} bytes")
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedError(f"the {what} is not valid Unicode") from None
    else:
        raw = bytes(data)
    if len(raw) > max_bytes:
        raise OversizedError(f"the {what} is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError(f"the {what} is not UTF-8") from None
    decoder = _INTEGER_DECODER if integers_only else _DECODER
    try:
        value = decoder.decode(text)
    except RecursionError:
        raise OversizedError(f"the {what} is nested deeper than {max_depth} levels") from None
    except MalformedError:
        raise
    except ValueError as exc:  # JSONDecodeError, the int digits limit
        raise MalformedError(f"the {what} is not valid JSON ({str(exc)[:80]})") from None
    # Cheap bounds first: depth never exceeds the number of opening brackets, and a surrogate
    # can only come from a \uD8xx..\uDFxx escape (raw surrogates are not UTF-8).
    deep = raw.count(b"[") + raw.count(b"{") > max_depth
    escaped = b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) is not None
    if deep or escaped:
        _walk(value, max_depth, escaped)
    return value


# --- RFC 8785 ----------------------------------------------------------------------------------


def _utf16_key(text: str) -> bytes:
    # UTF-16BE bytes compare exactly as the sequence of UTF-16 code units does.
    return text.encode("utf-16-be", "surrogatepass")


def es_number(value: float) -> str:
    """A finite double as ECMAScript's ``Number.prototype.toString`` writes it (RFC 8785 §3.2.2.3).

    Raises ``ValueError`` for NaN and the infinities, which JSON cannot carry.
    """
    if not math.isfinite(value):
        raise ValueError("NaN and Infinity have no JSON form")
    if value == 0:
        return "0"  # also -0
    sign = "-" if value < 0 else ""
    # repr() is the shortest text that round-trips (and the nearest when there is a choice),
    # which is the digit string ECMAScript asks for; only the layout differs.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent = int(exponent) + (len(digit_tuple) - len(digits))
    k = len(digits)
    n = exponent + k  # value = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise ValueError("a string with a lone surrogate has no canonical form")
        out.append(encode_basestring(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueError(f"the integer {str(value)[:24]} is not exact as a JSON number")
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(es_number(value))
    elif isinstance(value, Mapping):
        out.append("{")
        items = []
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"a JSON member name is a string, not {type(key).__name__}")
            items.append(key)
        items.sort(key=_utf16_key)
        for i, key in enumerate(items):
            if i:
                out.append(",")
            _encode(key, out)
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


def _plain(value: Any) -> bool:
    """True when ``json.dumps(sort_keys=True)`` writes ``value`` exactly as RFC 8785 does:
    no floats, integers exact, every member name ASCII (so code points and UTF-16 code units
    sort alike). Lone surrogates are left to the UTF-8 encoding, which refuses them."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii() or not _plain(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(map(_plain, value))
    return False


def rfc8785(obj: Any) -> bytes:
    """:func:`canonical_json` without its fast path: the reference the fast path is tested on."""
    out: list[str] = []
    _encode(obj, out)
    return "".join(out).encode("utf-8")


def canonical_json(obj: Any) -> bytes:
    """The RFC 8785 canonical bytes of a JSON value (usually an object).

    Raises ``ValueError`` for NaN/Infinity, an integer beyond ``2**53 - 1`` in magnitude or a
    lone surrogate (none has a canonical form), ``TypeError`` for a value that is not JSON
    (a set, bytes, a non-string member name), ``RecursionError`` for absurd nesting. Takes no
    time input.
    """
    if _plain(obj):
        # The common case, in C: what the gateway signs is ASCII-named, integer-valued JSON.
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string with a lone surrogate has no canonical form") from None
    return rfc8785(obj)
