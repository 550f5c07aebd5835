"""Arrival declarations without a socket: the rules as docs/rules.md states them for arrivals
(rule 4 and its partner-green exemption, the green-from day, the partner code's ceiling), the
decision of :class:`gateway.declaration.Declarations` on a real gateway state, the operators'
``trustgw declarations`` commands and the ``declarant-channel`` certificate role.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.aio import run

from adapters.base import Colour
from adapters.fields import id_check_digit
from gateway import tokens
from gateway.cli import main
from gateway.declaration import DeclarationForm, Declarations, check
from gateway.eligibility import Ceiling, Facts, evaluate, local_date
from gateway.pki import CertInfo, Role
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from keys.errors import GatewayError
from keys.personal import DeclareResult

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)  # 16:00 China Standard Time, 11 March
TODAY = local_date(NOW)
ZHANG = ("11010119900307123" + id_check_digit("11010119900307123"), "张三")


def ago(days: int) -> date:
    return TODAY - timedelta(days=days)


# --- the rules for arrivals -------------------------------------------------------------------

ARRIVAL = Facts(last_arrival=ago(3), temperature=36.6, ceiling_of=Ceiling.PARTNER)


@pytest.mark.parametrize(
    ("changes", "colour", "rules", "green_from"),
    [
        pytest.param({}, Colour.YELLOW, ("ARRIVED_UNDER_14_DAYS",), ago(3) + timedelta(14),
                     id="arrived-3-days-ago"),
        pytest.param({"last_arrival": ago(14)}, Colour.GREEN, (), None, id="arrived-14-days-ago"),
        pytest.param({"arrival_exempt": True}, Colour.GREEN, (), None, id="exempted"),
        pytest.param({"arrival_exempt": True, "ceiling": Colour.YELLOW}, Colour.YELLOW,
                     ("PARTNER_CODE_YELLOW",), None, id="partner-yellow-never-better"),
        pytest.param({"ceiling": Colour.RED}, Colour.RED,
                     ("ARRIVED_UNDER_14_DAYS", "PARTNER_CODE_RED"), None, id="partner-red"),
        pytest.param({"temperature": 37.3, "arrival_exempt": True}, Colour.RED, ("FEVER",), None,
                     id="fever-is-red-even-exempted"),
        pytest.param({"dry_cough": True}, Colour.YELLOW, ("SYMPTOMS", "ARRIVED_UNDER_14_DAYS"),
                     None, id="symptoms-do-not-pass-with-time"),
        pytest.param({"case": "close_contact", "observation_end": ago(-20)}, Colour.YELLOW,
                     ("UNDER_MEDICAL_OBSERVATION", "ARRIVED_UNDER_14_DAYS"), ago(-20),
                     id="observation-ends-after-the-14-days"),
        pytest.param({"case": "close_contact"}, Colour.YELLOW,
                     ("UNDER_MEDICAL_OBSERVATION", "ARRIVED_UNDER_14_DAYS"), None,
                     id="observation-without-an-end"),
        pytest.param({"case": "confirmed", "discharged_on": ago(10)}, Colour.YELLOW,
                     ("DISCHARGED_UNDER_14_DAYS", "ARRIVED_UNDER_14_DAYS"), ago(-11),
                     id="discharged-10-days-ago"),
        pytest.param({"case": "high_risk_contact", "isolation_start": ago(5),
                      "isolation_end": ago(-9)}, Colour.YELLOW,
                     ("CONTACT_ISOLATED_UNDER_14_DAYS", "ARRIVED_UNDER_14_DAYS"), ago(-11),
                     id="isolation-of-14-days-still-running"),
        pytest.param({"case": "positive", "isolation_start": ago(12), "isolation_end": ago(2)},
                     Colour.YELLOW, ("ISOLATED_UNDER_14_DAYS", "ARRIVED_UNDER_14_DAYS"), None,
                     id="isolation-that-ended-short"),
        pytest.param({"case": "suspected"}, Colour.RED,
                     ("NOT_CURED", "ARRIVED_UNDER_14_DAYS"), None, id="suspected-not-cured"),
    ],
)  # fmt: skip
def test_the_rules_give_an_arrival_its_colour_and_green_from_day(
    changes: dict[str, Any], colour: Colour, rules: tuple[str, ...], green_from: date | None
) -> None:
    from dataclasses import replace

    outcome = evaluate(replace(ARRIVAL, **changes), NOW)
    assert (outcome.colour, outcome.failed, outcome.green_from) == (colour, rules, green_from)
    assert all(message for _, message in outcome.messages())


def test_the_green_from_day_is_green_if_nothing_changes() -> None:
    from dataclasses import replace

    facts = replace(ARRIVAL, case="confirmed", discharged_on=ago(10))
    outcome = evaluate(facts, NOW)
    assert outcome.green_from is not None
    day_before = datetime.combine(outcome.green_from - timedelta(1), datetime.min.time(), UTC)
    assert evaluate(facts, day_before + timedelta(hours=4)).colour is Colour.YELLOW
    on_the_day = datetime.combine(outcome.green_from, datetime.min.time(), UTC)
    assert evaluate(facts, on_the_day).colour is Colour.GREEN  # 08:00 CST that day


# --- the decision on a real gateway state ------------------------------------------------------


def form(**changes: Any) -> DeclarationForm:
    values: dict[str, Any] = {
        "id_number": ZHANG[0],
        "origin": "110105",
        "arrival_date": ago(2).isoformat(),
        "places": ("110000",),
        "temperature": 36.5,
    }
    values.update(changes)
    return DeclarationForm(**values)


def test_a_form_never_shows_the_id_number() -> None:
    shown = repr(form()) + repr(check(form(), NOW))
    assert ZHANG[0] not in shown and "partner_code" not in shown


@pytest.fixture
def declare(prepared_dir, codes):
    """``declare(*forms, disable=())`` decides each form at NOW on a gateway with the 14
    simulated partners (``disable``: regions switched off first); forms may be callables of
    the code factory ``codes``."""
    data_dir: Path = prepared_dir(NOW)

    def go(*forms: Any, disable: tuple[str, ...] = ()) -> tuple[list[Any], Gateway, Path]:
        async def scenario() -> tuple[list[Any], Gateway, Path]:
            gateway = await Gateway.open(GatewayConfig(data_dir=data_dir))
            try:
                for region in disable:
                    await gateway.registry.set_region_enabled(region, False)
                declarations = Declarations(
                    gateway.store,
                    gateway,
                    gateway.pseudonymiser,
                    gateway.recogniser,
                    lambda: gateway.registry.snapshot,
                )
                answers: list[Any] = []
                for f in forms:
                    try:
                        answers.append(await declarations.declare(f, NOW))
                    except GatewayError as exc:
                        answers.append(exc.reason)
                return answers, gateway, data_dir
            finally:
                await gateway.close()

        return run(scenario())

    return go


def test_a_green_partner_code_exempts_only_through_partner_regions(declare, codes) -> None:
    green = codes("110000", NOW)(holder=ZHANG)
    answers, _, _ = declare(
        form(partner_code=green),
        form(partner_code=green, places=("110000", "420000")),  # Hubei: not a partner
        form(partner_code=green, places=("110000", "370102")),  # and home: still exempt
    )
    exempt = [a.record.exempt for a in answers]
    assert exempt == [True, False, True]
    assert [a.record.colour for a in answers] == ["green", "yellow", "green"]


def test_a_disabled_partner_region_does_not_exempt(declare, codes) -> None:
    green = codes("110000", NOW)(holder=ZHANG)
    answers, _, _ = declare(form(partner_code=green), disable=("110000",))
    assert answers == ["REGION_DISABLED"]  # the code itself is refused, as Recognise does


def test_a_declaration_home_code_verifies_and_ends_on_the_green_from_day(declare) -> None:
    answers, gateway, _ = declare(
        form(origin="JP", places=("JP",), arrival_date=ago(10).isoformat()),
        form(id_number=ZHANG[0], origin="JP", places=("JP",), dry_cough=True),
    )
    result: DeclareResult = answers[0]
    record = result.record
    assert (record.colour, record.green_from) == ("yellow", ago(10) + timedelta(14))
    trust = tokens.GatewayTrust.from_key_infos(gateway.published_keys(), now=NOW)
    claims = tokens.verify_home_code(record.code, trust, NOW)
    assert (claims["colour"], claims["src"], claims["id"]) == ("yellow", {"declaration": "JP"},
                                                               record.id)  # fmt: skip
    # It ends at midnight China Standard Time of the green-from day (16:00 UTC the day before).
    assert record.green_from is not None
    midnight = datetime.combine(record.green_from, datetime.min.time(), UTC) - timedelta(hours=8)
    assert record.expires_at == midnight
    # Without a green-from day (symptoms do not pass with time): the week's validity.
    revised = answers[1]
    assert revised.superseded == record.id
    assert revised.record.expires_at == NOW + timedelta(days=7)


# --- the operators' commands ----------------------------------------------------------------


def test_declarations_show_and_count_with_json(declare, codes, capsys) -> None:
    green = codes("110000", NOW)(holder=ZHANG)
    answers, _, data_dir = declare(
        form(partner_code=green),
        form(id_number="42010519780615234"[:17] + id_check_digit("42010519780615234"[:17]),
             origin="420000", places=("420000",)),
    )  # fmt: skip
    first = answers[0].record
    capsys.readouterr()
    assert main(["declarations", "show", first.id, "--data-dir", str(data_dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["status"], shown["colour"], shown["exempt"]) == (
        first.id, "current", "green", True,
    )  # fmt: skip
    assert shown["home_code"] == first.code and "holder" not in shown
    argv = ["declarations", "count", "--by", "origin,colour", "--data-dir", str(data_dir)]
    argv.append("--json")
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"origin": "110000", "colour": "green", "count": 1},
        {"origin": "420000", "colour": "yellow", "count": 1},
    ]
    assert main(["declarations", "count", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.split() == ["count", "2"]


@pytest.mark.parametrize(
    ("argv", "status", "reason"),
    [
        pytest.param(["show", "SD" + "0" * 30], 1, "NOT_FOUND", id="unknown-id"),
        pytest.param(["show", "not-an-id"], 2, "USAGE", id="bad-id"),
        pytest.param(["count", "--by", "holder"], 2, "USAGE", id="bad-group"),
        pytest.param(["count", "--since", "2026-02-30"], 2, "USAGE", id="bad-day"),
        pytest.param(["count", "--since", "2026-03-02", "--until", "2026-03-01"], 2, "USAGE",
                     id="since-after-until"),
    ],
)  # fmt: skip
def test_declarations_commands_fail_in_one_line(
    own_data_dir: Path, capsys, argv: list[str], status: int, reason: str
) -> None:
    assert main(["declarations", *argv, "--data-dir", str(own_data_dir)]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"trustgw: {reason}: ")


def test_pki_issues_a_declarant_channel_certificate(own_data_dir: Path, capsys) -> None:
    argv = ["pki", "issue", "--data-dir", str(own_data_dir), "--role", "declarant-channel"]
    assert main([*argv, "--name", "sd-app", "--json"]) == 0
    capsys.readouterr()
    pem = own_data_dir / "pki" / "declarant-channel-sd-app.pem"
    from cryptography import x509

    info = CertInfo.of(x509.load_pem_x509_certificate(pem.read_bytes()), "x", pem)
    assert (info.role, info.uri) == (
        Role.DECLARANT_CHANNEL.value,
        "trustgw://declarant-channel/sd-app",
    )
