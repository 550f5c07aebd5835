"""The 14 partner regions, each a declarative :class:`RegionSpec` over the shared codecs.

docs/partners.md describes every format in full; keep the two in step. Detection is by prefix:
no prefix is a prefix of another, so at most one region matches a code.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType

from adapters.base import Codec, OnlineSpec, RegionAdapter, RegionSpec
from adapters.codecs.compact import CompactCodec, DelimitedPayload, JsonPayload
from adapters.codecs.cose import CoseCodec, CoseTag
from adapters.codecs.encoding import Compression, TextEncoding
from adapters.codecs.jws import JwsCodec
from adapters.fields import (
    CHINESE,
    DIGITS_012,
    DIGITS_012_TEXT,
    DIGITS_123,
    LETTERS,
    WORDS,
    CodeIdForm,
    Fields,
    TimeFormat,
)
from keys.crypto import Algorithm
from keys.errors import RegionUnknownError
from keys.model import Mode

ED25519 = frozenset({Algorithm.EDDSA})
P256 = frozenset({Algorithm.ES256})
HOURS = timedelta(hours=1)
DAYS = timedelta(days=1)
# CWT claim labels (RFC 8392)
CWT_ISS, CWT_EXP, CWT_IAT, CWT_CTI = 1, 4, 6, 7


def _spec(
    code: str,
    name: str,
    mode: Mode,
    codec: Codec,
    fields: Fields,
    max_age: timedelta,
    alg: Algorithm,
    online: OnlineSpec | None = None,
) -> RegionSpec:
    """A region spec whose prefix is its codec's (one source of truth for detection)."""
    prefix: str = codec.prefix  # type: ignore[attr-defined]
    return RegionSpec(code, name, mode, prefix, codec, fields, max_age, alg, online)


REGION_SPECS: tuple[RegionSpec, ...] = (
    # -- family (a): compact Ed25519 --------------------------------------------------------
    _spec(
        "110000", "Beijing", Mode.SHOW,
        CompactCodec("BJ1:", TextEncoding.BASE45, Compression.ZLIB, JsonPayload()),
        Fields(
            constants=((("v",), 1),),
            code_id=("cid",),
            holder_id=("p", "id"),
            holder_name=("p", "n"),
            colour=("hs", "c"),
            colour_spelling=LETTERS,
            issued_at=("hs", "iat"),
            expires_at=("hs", "exp"),
            time_format=TimeFormat.UNIX_SECONDS,
        ),
        24 * HOURS, Algorithm.EDDSA,
        # Online too (docs/partners.md §9.8): BJ1:ON1.bjhc.<code id>, status asked online.
        OnlineSpec(frozenset({"bjhc"})),
    ),
    # The SM2 variant of family (a): a provincial government platform signing with the national
    # algorithms (SM2 over SM3), as GB/T 39786 asks of government systems (docs/partners.md).
    _spec(
        "230000", "Heilongjiang", Mode.CONVERT,
        CompactCodec(
            "HLJ:", TextEncoding.BASE64URL, Compression.NONE,
            DelimitedPayload(("bb", "bh", "sfzh", "xm", "ys", "kssj", "jssj"), "|"),
            alg=Algorithm.SM2,
        ),
        Fields(
            constants=((("bb",), "1"),),
            code_id=("bh",),
            holder_id=("sfzh",),
            holder_name=("xm",),
            colour=("ys",),
            colour_spelling=CHINESE,
            issued_at=("kssj",),
            expires_at=("jssj",),
            time_format=TimeFormat.CST_COMPACT,
        ),
        3 * DAYS, Algorithm.SM2,
    ),
    _spec(
        "340000", "Anhui", Mode.SHOW,
        CompactCodec("AHM:", TextEncoding.BASE45, Compression.NONE, JsonPayload()),
        Fields(
            holder_id=("idno",),
            holder_name=("name",),
            colour=("color",),
            colour_spelling=DIGITS_123,
            issued_at=("iat_ms",),
            expires_at=("exp_ms",),
            time_format=TimeFormat.UNIX_MILLIS,
        ),
        3 * DAYS, Algorithm.EDDSA,
    ),
    _spec(
        "500000", "Chongqing", Mode.CONVERT,
        CompactCodec(
            "CQJKM:", TextEncoding.BASE64URL, Compression.ZLIB,
            DelimitedPayload(
                ("id", "zjhm", "xm", "zt", "qs", "zz"), ";", frozenset({"qs", "zz"})
            ),
        ),
        Fields(
            code_id=("id",),
            holder_id=("zjhm",),
            holder_name=("xm",),
            colour=("zt",),
            colour_spelling=DIGITS_012_TEXT,
            issued_at=("qs",),
            expires_at=("zz",),
            time_format=TimeFormat.UNIX_SECONDS,
        ),
        48 * HOURS, Algorithm.EDDSA,
        # Online too (docs/partners.md §9.8): CQJKM:ON1.cqjkm.<code id>.
        OnlineSpec(frozenset({"cqjkm"})),
    ),
    _spec(
        "650000", "Xinjiang", Mode.SHOW,
        CompactCodec("XJ-", TextEncoding.BASE45, Compression.ZLIB, JsonPayload()),
        Fields(
            code_id=("cert", "no"),
            holder_id=("holder", "idcard"),
            colour=("status", "colour"),
            colour_spelling=WORDS,
            issued_at=("status", "from"),
            expires_at=("status", "to"),
            time_format=TimeFormat.ISO8601,
        ),
        7 * DAYS, Algorithm.EDDSA,
    ),
    # -- family (b): JWS ------------------------------------------------------------------
    _spec(
        "120000", "Tianjin", Mode.CONVERT,
        JwsCodec("TJHC:", P256, deflate=False, typ="JWT"),
        Fields(
            constants=((("iss",), "tjhc"),),
            code_id=("jti",),
            holder_id=("sub",),
            holder_name=("name",),
            colour=("color",),
            colour_spelling=WORDS,
            issued_at=("iat",),
            expires_at=("exp",),
            time_format=TimeFormat.UNIX_SECONDS,
        ),
        48 * HOURS, Algorithm.ES256,
    ),
    _spec(
        "310000", "Shanghai", Mode.SHOW,
        JwsCodec("https://ssm.sh.gov.cn/hc#", ED25519, deflate=True),
        Fields(
            code_id=("jti",),
            holder_id=("hs", "sfz"),
            holder_name=("hs", "xm"),
            colour=("hs", "c"),
            colour_spelling=DIGITS_012,
            issued_at=("hs", "from"),
            expires_at=("hs", "until"),
            time_format=TimeFormat.ISO8601,
        ),
        24 * HOURS, Algorithm.EDDSA,
    ),
    _spec(
        "410000", "Henan", Mode.CONVERT,
        JwsCodec("YU:", P256, deflate=True),
        Fields(
            code_id=("jti",),
            holder_id=("sfzh",),
            holder_name=("xm",),
            colour=("ys",),
            colour_spelling=CHINESE,
            issued_at=("qfsj",),
            expires_at=("yxq",),
            time_format=TimeFormat.UNIX_MILLIS,
        ),
        3 * DAYS, Algorithm.ES256,
    ),
    _spec(
        "510000", "Sichuan", Mode.SHOW,
        JwsCodec("SCTFM:", ED25519, deflate=False),
        Fields(
            code_id=("tfm", "no"),
            holder_id=("tfm", "zjhm"),
            holder_name=("tfm", "xm"),
            colour=("tfm", "ys"),
            colour_spelling=LETTERS,
            issued_at=("iat",),
            expires_at=("exp",),
            time_format=TimeFormat.UNIX_SECONDS,
        ),
        48 * HOURS, Algorithm.EDDSA,
    ),
    _spec(
        "630000", "Qinghai", Mode.CONVERT,
        JwsCodec("https://jkm.qh.gov.cn/v?c=", P256, deflate=True),
        Fields(
            holder_id=("sfzh",),
            holder_name=("xm",),
            colour=("mzt",),
            colour_spelling=DIGITS_123,
            issued_at=("sxsj",),
            expires_at=("sxsj_end",),
            time_format=TimeFormat.CST_COMPACT,
        ),
        5 * DAYS, Algorithm.ES256,
    ),
    # -- family (c): COSE_Sign1 + CWT -----------------------------------------------------
    _spec(
        "130000", "Hebei", Mode.SHOW,
        CoseCodec("HE1:", ED25519, TextEncoding.BASE45, Compression.ZLIB, tag=CoseTag.SIGN1),
        Fields(
            constants=(((CWT_ISS,), "CN-130000"),),
            code_id=(CWT_CTI,),
            code_id_form=CodeIdForm.BYTES,
            holder_id=(-65537,),
            holder_name=(-65538,),
            colour=(-65539,),
            colour_spelling=DIGITS_012,
            issued_at=(CWT_IAT,),
            expires_at=(CWT_EXP,),
            time_format=TimeFormat.UNIX_SECONDS,
        ),
        3 * DAYS, Algorithm.EDDSA,
    ),
    _spec(
        "330000", "Zhejiang", Mode.CONVERT,
        CoseCodec("ZJ1:", P256, TextEncoding.BASE45, Compression.ZLIB, tag=CoseTag.CWT_SIGN1),
        Fields(
            constants=(((CWT_ISS,), "CN-330000"),),
            code_id=(-260, 1, "ci"),
            holder_id=(-260, 1, "id"),
            holder_name=(-260, 1, "nm"),
            colour=(-260, 1, "st"),
            colour_spelling=WORDS,
            issued_at=(CWT_IAT,),
            expires_at=(CWT_EXP,),
            time_format=TimeFormat.UNIX_SECONDS,
        ),
        48 * HOURS, Algorithm.ES256,
    ),
    _spec(
        "440000", "Guangdong", Mode.SHOW,
        CoseCodec(
            "YKM:", P256, TextEncoding.BASE64URL, Compression.NONE,
            tag=CoseTag.UNTAGGED, kid_in_protected=False,
        ),
        Fields(
            code_id=(CWT_CTI,),
            code_id_form=CodeIdForm.BYTES,
            holder_id=("sfz",),
            holder_name=("xm",),
            colour=("ys",),
            colour_spelling=CHINESE,
            issued_at=(CWT_IAT,),
            expires_at=(CWT_EXP,),
            time_format=TimeFormat.UNIX_SECONDS,
        ),
        24 * HOURS, Algorithm.ES256,
    ),
    _spec(
        "520000", "Guizhou", Mode.CONVERT,
        CoseCodec("GZ1:", ED25519, TextEncoding.BASE45, Compression.ZLIB, tag=CoseTag.SIGN1),
        Fields(
            holder_id=(-70520, 1),
            holder_name=(-70520, 2),
            colour=(-70520, 3),
            colour_spelling=DIGITS_123,
            issued_at=(CWT_IAT,),
            expires_at=(CWT_EXP,),
            time_format=TimeFormat.UNIX_SECONDS,
        ),
        7 * DAYS, Algorithm.EDDSA,
    ),
)  # fmt: skip


def _check_prefixes(specs: tuple[RegionSpec, ...]) -> None:
    for a in specs:
        for b in specs:
            if a is not b and b.prefix.startswith(a.prefix):
                raise ValueError(f"prefix {a.prefix!r} of {a.code} is a prefix of {b.code}'s")


_check_prefixes(REGION_SPECS)

ADAPTERS: Mapping[str, RegionAdapter] = MappingProxyType(
    {spec.code: RegionAdapter(spec) for spec in REGION_SPECS}
)

# detect(): one dict lookup per distinct prefix length (at most 14, in practice a handful).
_BY_PREFIX: dict[str, RegionAdapter] = {a.spec.prefix: a for a in ADAPTERS.values()}
_PREFIX_LENGTHS: tuple[int, ...] = tuple(sorted({len(p) for p in _BY_PREFIX}))


def detect(text: str) -> RegionAdapter:
    """The adapter of the region whose prefix starts ``text``.

    Raises :class:`RegionUnknownError` when none does. The caller strips whitespace first.
    """
    for length in _PREFIX_LENGTHS:
        adapter = _BY_PREFIX.get(text[:length])
        if adapter is not None:
            return adapter
    raise RegionUnknownError("the code does not start with any partner region's prefix")


# What each region's codes may be signed with: a code-signing key of any other algorithm could
# never verify one of them, so the registry refuses it (keys.model.check_key_algorithm).
REGION_ALGORITHMS: Mapping[str, frozenset[Algorithm]] = MappingProxyType(
    {spec.code: spec.codec.algs for spec in REGION_SPECS}
)


def spec_for(region: str) -> RegionSpec:
    """The spec of ``region``; raises :class:`ValueError` for a code that is not a partner."""
    try:
        return ADAPTERS[region].spec
    except KeyError:
        raise ValueError(f"{region!r} is not a partner region") from None


# The regions whose codes may also be online tokens (docs/partners.md §9.8).
ONLINE_REGIONS: tuple[str, ...] = tuple(s.code for s in REGION_SPECS if s.online is not None)

__all__ = [
    "ADAPTERS",
    "ONLINE_REGIONS",
    "REGION_ALGORITHMS",
    "REGION_SPECS",
    "detect",
    "spec_for",
]
