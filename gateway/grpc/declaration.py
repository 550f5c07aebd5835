"""``DeclarationService``, for the province's app back ends (role ``declarant-channel``):
arrival declarations and their home codes. docs/api.md, "DeclarationService".

The wire only: the request becomes a :class:`gateway.declaration.DeclarationForm`, the decision
is :class:`gateway.declaration.Declarations`'s, errors become statuses in
:mod:`gateway.grpc.errors`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import grpc

from adapters.base import Colour
from gateway import tokens
from gateway.api.v1 import declaration_pb2 as pb
from gateway.api.v1 import recognition_pb2 as rpb
from gateway.declaration import DeclarationForm, Declarations
from gateway.declaration.form import refused
from gateway.eligibility import RULE_MESSAGES
from gateway.grpc.methods import MAX_SMALL_REQUEST_BYTES, Method
from gateway.limits import MAX_DECLARE_REQUEST_BYTES
from gateway.pki import Role
from gateway.runtime.gateway import Gateway
from keys.personal import DeclarationRecord
from keys.timeutil import to_unix, utcnow

MAX_REQUEST_ID_CHARS = 128
MAX_DECLARATION_ID_CHARS = 64
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DeclarationService"].full_name

_CASES = {
    pb.CASE_STATUS_UNSPECIFIED: "none",
    pb.CASE_NONE: "none",
    pb.CASE_CONFIRMED: "confirmed",
    pb.CASE_SUSPECTED: "suspected",
    pb.CASE_POSITIVE: "positive",
    pb.CASE_CLOSE_CONTACT: "close_contact",
    pb.CASE_HIGH_RISK_CONTACT: "high_risk_contact",
}
_COLOURS = {
    Colour.GREEN.value: rpb.COLOUR_GREEN,
    Colour.YELLOW.value: rpb.COLOUR_YELLOW,
    Colour.RED.value: rpb.COLOUR_RED,
}


def form_of(request: pb.DeclareRequest) -> DeclarationForm:
    """The declaration a request carries. Raises :class:`DeclarationInvalidError`
    (``FIELD_INVALID``: a case status this gateway does not know; ``FIELD_TOO_LONG``: the
    request id)."""
    if len(request.request_id) > MAX_REQUEST_ID_CHARS:
        raise refused(
            "FIELD_TOO_LONG",
            f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters",
            "request_id",
        )
    case = _CASES.get(request.case_status)
    if case is None:
        raise refused("FIELD_INVALID", "case_status is not one of the plan's case statuses", "case")
    return DeclarationForm(
        id_number=request.id_number,
        origin=request.origin,
        arrival_date=request.arrival_date,
        places=tuple(request.places),
        temperature=(
            request.temperature_celsius if request.HasField("temperature_celsius") else None
        ),
        dry_cough=request.dry_cough,
        fatigue=request.fatigue,
        case=case,
        discharged_on=request.discharged_on,
        isolation_start=request.isolation_start,
        isolation_end=request.isolation_end,
        observation_end=request.observation_end,
        partner_code=request.partner_code,
    )


def _home_code(record: DeclarationRecord) -> rpb.ConvertedCode:
    return rpb.ConvertedCode(
        code=record.code,
        key_id=tokens.home_code_kid(record.code),
        expires_at=to_unix(record.expires_at),
        code_id=record.id,
    )


def _rules(record: DeclarationRecord) -> list[pb.FailedRule]:
    return [pb.FailedRule(rule=r, message=RULE_MESSAGES.get(r, r)) for r in record.rules]


def _green_from(record: DeclarationRecord) -> str:
    return "" if record.green_from is None else record.green_from.isoformat()


def declaration_to_proto(record: DeclarationRecord) -> pb.Declaration:
    """A stored declaration as ``GetDeclaration`` answers it."""
    return pb.Declaration(
        declaration_id=record.id,
        status=record.status,
        colour=_COLOURS[record.colour],
        failed_rules=_rules(record),
        green_from=_green_from(record),
        origin=record.origin,
        arrival_date=record.arrival_date.isoformat(),
        exempt=record.exempt,
        partner_region=record.partner_region,
        home_code=_home_code(record),
        issued_at=to_unix(record.issued_at),
        revoked_at=0 if record.revoked_at is None else to_unix(record.revoked_at),
        superseded_by=record.superseded_by,
    )


class DeclarationService:
    """For the province's app back ends: declare an arrival, look a declaration up."""

    service = pb.DESCRIPTOR.services_by_name["DeclarationService"]
    methods: ClassVar[dict[str, Method]] = {
        "Declare": Method((Role.DECLARANT_CHANNEL,), MAX_DECLARE_REQUEST_BYTES),
        "GetDeclaration": Method((Role.DECLARANT_CHANNEL,), MAX_SMALL_REQUEST_BYTES),
    }

    def __init__(self, gateway: Gateway) -> None:
        self._declarations = Declarations(
            gateway.store,
            gateway,
            gateway.pseudonymiser,
            gateway.recogniser,
            lambda: gateway.registry.snapshot,
        )

    async def Declare(
        self, request: pb.DeclareRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeclareResponse:
        form = form_of(request)
        result = await self._declarations.declare(form, utcnow())
        record = result.record
        return pb.DeclareResponse(
            request_id=request.request_id,
            declaration_id=record.id,
            colour=_COLOURS[record.colour],
            home_code=_home_code(record),
            failed_rules=_rules(record),
            green_from=_green_from(record),
            duplicate=result.duplicate,
            superseded=result.superseded,
            exempt=record.exempt,
            partner_region=record.partner_region,
        )

    async def GetDeclaration(
        self, request: pb.GetDeclarationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Declaration:
        ident = request.declaration_id.strip()
        if not ident or len(ident) > MAX_DECLARATION_ID_CHARS:
            raise refused("FIELD_INVALID", "declaration_id is empty or too long", "declaration_id")
        return declaration_to_proto(await self._declarations.get(ident))
