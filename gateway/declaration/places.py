"""Where a declarant comes from: a province-level division of China (GB/T 2260) or a country
(ISO 3166-1 alpha-2).

A division code is six ASCII digits; any code is taken at its province (the first two digits,
``xx0000``), whether the province is a partner or not. The home province is not an origin:
its residents do not arrive from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keys.model import HOME_REGION

# GB/T 2260 province-level divisions (the first two digits of every division code).
PROVINCES: dict[str, str] = {
    "110000": "Beijing", "120000": "Tianjin", "130000": "Hebei", "140000": "Shanxi",
    "150000": "Inner Mongolia", "210000": "Liaoning", "220000": "Jilin",
    "230000": "Heilongjiang", "310000": "Shanghai", "320000": "Jiangsu", "330000": "Zhejiang",
    "340000": "Anhui", "350000": "Fujian", "360000": "Jiangxi", "370000": "Shandong",
    "410000": "Henan", "420000": "Hubei", "430000": "Hunan", "440000": "Guangdong",
    "450000": "Guangxi", "460000": "Hainan", "500000": "Chongqing", "510000": "Sichuan",
    "520000": "Guizhou", "530000": "Yunnan", "540000": "Tibet", "610000": "Shaanxi",
    "620000": "Gansu", "630000": "Qinghai", "640000": "Ningxia", "650000": "Xinjiang",
    "710000": "Taiwan", "810000": "Hong Kong", "820000": "Macao",
}  # fmt: skip

# ISO 3166-1 alpha-2, the officially assigned codes. CN is not an origin: a place in China is
# named by its division code.
COUNTRIES = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
    """.split()
)
_DIVISION = re.compile(r"[0-9]{6}")  # ASCII digits only
_COUNTRY = re.compile(r"[A-Z]{2}")
PROVINCE = "province"
ABROAD = "abroad"
HOME = "home"


@dataclass(frozen=True)
class Place:
    """A place as the declaration keeps it: a province code (``xx0000``) or a country code."""

    code: str
    kind: str  # "province" | "abroad" | "home"

    @property
    def outside(self) -> bool:
        """Outside the home province."""
        return self.kind != HOME


def parse_place(text: str) -> Place | None:
    """The place ``text`` names, or ``None`` if it names none (an unknown division or country,
    ``CN``, anything else)."""
    if _DIVISION.fullmatch(text):
        province = text[:2] + "0000"
        if province not in PROVINCES:
            return None
        return Place(province, HOME if province == HOME_REGION else PROVINCE)
    if _COUNTRY.fullmatch(text) and text in COUNTRIES and text != "CN":
        return Place(text, ABROAD)
    return None
