"""Codes of a simulated partner region, issued relative to a reference time."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from adapters.base import Colour
from adapters.simulator import PartnerIssuer, fake_holder


@dataclass
class CodeFactory:
    """Issues codes of a region relative to a reference time."""

    issuer: PartnerIssuer
    now: datetime
    rng: random.Random

    def __call__(
        self,
        colour: Colour = Colour.GREEN,
        *,
        age: timedelta = timedelta(hours=1),
        ttl: timedelta = timedelta(hours=23),
        forged: bool = False,
        holder: tuple[str, str] | None = None,
        code_id: str | None = None,
    ) -> str:
        holder_id, name = holder or fake_holder(self.rng)
        issued_at = self.now - age
        kwargs: dict[str, Any] = {
            "holder_id": holder_id,
            "holder_name": name,
            "colour": colour,
            "issued_at": issued_at,
            "expires_at": issued_at + age + ttl,
        }
        if code_id is not None:
            kwargs["code_id"] = code_id
        return self.issuer.forge(**kwargs) if forged else self.issuer.issue(**kwargs)
