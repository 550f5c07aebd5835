"""Correcting a partner key's validity window, and the start ``keys add`` gives by default
(issue 8 item 6; docs/operations.md "Onboarding a partner", docs/trust-registry.md §13).

A key added with ``--not-before`` = the moment of ``keys add`` refused every code the partner had
issued minutes earlier, and could not be corrected (re-adding it was ``ALREADY_EXISTS``). Now
``keys add`` starts a key at now minus the region's maximum code age, and ``keys update``
corrects a window (audited); its rules are a pure plan, tested here as a table.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_support import one_line_error, trustgw
from support.aio import run
from support.clock import REAL_NOW

from adapters.simulator import PartnerSimulator
from keys.crypto import Algorithm, PrivateKey
from keys.errors import ConcurrentChangeError, KeyWindowRefusedError, NotFoundError
from keys.keywindow import default_not_before, plan_key_window
from keys.model import KeyStatus, Mode, Region, RegionKey
from keys.records import RegionTrust
from keys.store import SQLiteStore
from keys.timeutil import parse_time, to_iso

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
REGION = Region("110000", "Beijing", Mode.SHOW, timedelta(hours=24))
PUBLIC = PrivateKey.generate(Algorithm.EDDSA).public_key()
KEY = RegionKey("110000", "K1", PUBLIC, NOW - H, NOW + 365 * 24 * H)


def _trust(key: RegionKey = KEY, *, keyset_version: int = 0) -> RegionTrust:
    return RegionTrust(REGION, None, 0, keyset_version, (key,))


@pytest.mark.parametrize(
    "not_before, not_after, expected",
    [
        pytest.param(NOW - 3 * H, None, (NOW - 3 * H, KEY.not_after), id="earlier-start"),
        pytest.param(NOW - 24 * H, None, (NOW - 24 * H, KEY.not_after), id="start-at-max-age"),
        pytest.param(NOW, NOW + 2 * H, (NOW, NOW + 2 * H), id="narrowed"),
        pytest.param(NOW - H, NOW + 400 * 24 * H, (NOW - H, NOW + 400 * 24 * H), id="later-end"),
        pytest.param(KEY.not_before, None, (KEY.not_before, KEY.not_after), id="unchanged"),
    ],
)
def test_allowed_corrections(
    not_before: datetime, not_after: datetime | None, expected: tuple[datetime, datetime]
) -> None:
    current, updated = plan_key_window("110000", _trust(), "K1", not_before, not_after, NOW)
    assert current == KEY
    assert (updated.not_before, updated.not_after) == expected
    assert (updated.kid, updated.public_key, updated.status) == ("K1", PUBLIC, KeyStatus.ACTIVE)


REVOKED = replace(KEY, status=KeyStatus.REVOKED, revoked_at=NOW - H / 2)
OLD_START = replace(KEY, not_before=NOW - 30 * 24 * H)


@pytest.mark.parametrize(
    "trust, kid, not_before, not_after, error, words",
    [
        pytest.param(_trust(REVOKED), "K1", NOW - 3 * H, None, KeyWindowRefusedError,
                     "is revoked", id="revoked-key"),
        pytest.param(_trust(keyset_version=2), "K1", NOW - 3 * H, None, KeyWindowRefusedError,
                     "signed key sets", id="region-with-key-sets"),
        pytest.param(_trust(), "K1", NOW - 25 * H, None, KeyWindowRefusedError,
                     "accepts no code older than", id="start-before-max-age"),
        pytest.param(_trust(), "K1", datetime(2016, 3, 11, tzinfo=UTC), None,
                     KeyWindowRefusedError, "earlier than", id="typo-year"),
        pytest.param(_trust(), "K1", NOW, NOW, KeyWindowRefusedError, "is not after",
                     id="empty-window"),
        pytest.param(_trust(), "K1", KEY.not_after + H, None, KeyWindowRefusedError,
                     "is not after", id="start-after-kept-end"),
        pytest.param(_trust(), "K2", NOW - 3 * H, None, NotFoundError, "has no key K2",
                     id="unknown-key"),
        pytest.param(RegionTrust(None, None, 0, 0), "K1", NOW, None, NotFoundError,
                     "not registered", id="unknown-region"),
    ],
)  # fmt: skip
def test_refused_corrections(
    trust: RegionTrust,
    kid: str,
    not_before: datetime,
    not_after: datetime | None,
    error: type[Exception],
    words: str,
) -> None:
    with pytest.raises(error, match=words):
        plan_key_window("110000", trust, kid, not_before, not_after, NOW)


def test_a_start_already_earlier_than_max_age_may_stay_or_move_later() -> None:
    """The floor is the earlier of the current start and now - max age: no refusal of a kept
    start, however old."""
    trust = _trust(OLD_START)
    _, kept = plan_key_window("110000", trust, "K1", OLD_START.not_before, NOW + 48 * H, NOW)
    assert kept.not_before == OLD_START.not_before and kept.not_after == NOW + 48 * H
    with pytest.raises(KeyWindowRefusedError):
        plan_key_window("110000", trust, "K1", OLD_START.not_before - H, None, NOW)


def test_the_default_start_is_now_minus_the_regions_maximum_code_age() -> None:
    assert default_not_before(REGION, NOW) == NOW - 24 * H


def test_the_store_applies_a_window_once_and_refuses_a_stale_plan(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path / "t.db")
        try:
            await store.upsert_region(REGION, now=NOW)
            await store.add_key(KEY, now=NOW)
            trust = await store.region_trust("110000")
            current, updated = plan_key_window("110000", trust, "K1", NOW - 3 * H, None, NOW)
            after = await store.set_key_window(current, updated, actor="operator:t", now=NOW)
            assert after.not_before == NOW - 3 * H
            version = await store.registry_version()
            # the same plan again: the key is no longer stored as it was read
            with pytest.raises(ConcurrentChangeError):
                await store.set_key_window(current, updated, actor="operator:t", now=NOW)
            assert await store.registry_version() == version
            _, entries = await store.read_audit(0, 100)
            update = [e for e in entries if e.action == "key.update"]
            assert len(update) == 1 and update[0].actor == "operator:t"
            assert update[0].before is not None and update[0].after is not None
            assert update[0].before["not_before"] == int((NOW - H).timestamp())
            assert update[0].after["not_before"] == int((NOW - 3 * H).timestamp())
        finally:
            await store.close()

    run(body())


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def partner(own_data_dir: Path, tmp_path: Path) -> tuple[Path, str, object]:
    """A simulated partner of region 110000 whose key is not registered yet: (key file, kid,
    issuer)."""
    issuer = PartnerSimulator.generate().issuer("110000")
    key = issuer.region_key(NOW, NOW + H).public_key
    path = tmp_path / "partner.jwk"
    path.write_text(json.dumps(key.to_jwk()))
    return path, issuer.kid, issuer


def _listed(capsys: pytest.CaptureFixture[str], data_dir: Path, kid: str) -> dict[str, str]:
    ran = trustgw(capsys, "keys", "list", "--data-dir", str(data_dir), "--json")
    assert ran.status == 0, ran.err
    (row,) = [r for r in json.loads(ran.out) if r["kid"] == kid and r["owner"] == "110000"]
    return row


def _added_at(capsys: pytest.CaptureFixture[str], data_dir: Path, kid: str) -> datetime:
    """When ``keys add`` added ``kid``: the time of its audit entry (the command's own now)."""
    shown = trustgw(capsys, "audit", "show", "--data-dir", str(data_dir), "--json")
    (entry,) = [e for e in json.loads(shown.out)["entries"] if e["action"] == "key.add"
                and e["after"]["kid"] == kid]  # fmt: skip
    return parse_time(str(entry["time"]))


def test_keys_add_starts_a_key_at_now_minus_the_maximum_code_age(
    own_data_dir: Path, partner: tuple[Path, str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    path, kid, issuer = partner
    ran = trustgw(capsys, "keys", "add", "--data-dir", str(own_data_dir), "--region", "110000",
                  "--public-key", str(path), "--kid", kid, "--json")  # fmt: skip
    assert ran.status == 0, ran.err
    added = json.loads(ran.out)
    max_age = issuer.spec.max_age  # type: ignore[attr-defined]
    assert parse_time(added["not_before"]) == _added_at(capsys, own_data_dir, kid) - max_age
    assert _listed(capsys, own_data_dir, kid)["not_before"] == added["not_before"]
    # a plain retry is a no-op, not ALREADY_EXISTS (the clock moved, the key did not)
    again = trustgw(capsys, "keys", "add", "--data-dir", str(own_data_dir), "--region",
                    "110000", "--public-key", str(path), "--kid", kid, "--json")  # fmt: skip
    assert again.status == 0 and json.loads(again.out)["inserted"] is False


def test_a_code_issued_minutes_before_keys_add_is_recognised(
    own_data_dir: Path, partner: tuple[Path, str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    from adapters.base import Colour
    from gateway.runtime.gateway import Gateway, GatewayConfig

    path, kid, issuer = partner
    now = REAL_NOW
    code = issuer.issue(  # type: ignore[attr-defined]
        holder_id="11010119900307123X", holder_name="x", colour=Colour.GREEN,
        issued_at=now - timedelta(minutes=10), expires_at=now + 12 * H,
    )  # fmt: skip
    ran = trustgw(capsys, "keys", "add", "--data-dir", str(own_data_dir), "--region", "110000",
                  "--public-key", str(path), "--kid", kid)  # fmt: skip
    assert ran.status == 0, ran.err
    added_at = _added_at(capsys, own_data_dir, kid)  # the command's own "now"
    assert now - timedelta(minutes=10) < added_at  # the code predates the key

    async def decide() -> str:
        gateway = await Gateway.open(GatewayConfig(data_dir=own_data_dir))
        try:
            return (await gateway.recogniser.recognise(code, added_at)).reason
        finally:
            await gateway.close()

    assert run(decide()) == "RECOGNISED"


def test_keys_update_corrects_a_window_and_the_audit_trail_says_so(
    own_data_dir: Path, partner: tuple[Path, str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    path, kid, _ = partner
    start = REAL_NOW
    data = str(own_data_dir)
    ran = trustgw(capsys, "keys", "add", "--data-dir", data, "--region", "110000",
                  "--public-key", str(path), "--kid", kid,
                  "--not-before", to_iso(start))  # fmt: skip
    assert ran.status == 0, ran.err
    earlier = to_iso(start - 2 * H)
    ran = trustgw(capsys, "keys", "update", "--data-dir", data, "--region", "110000",
                  "--kid", kid, "--not-before", earlier, "--json")  # fmt: skip
    assert ran.status == 0, ran.err
    result = json.loads(ran.out)
    assert result["changed"] is True and result["after"]["not_before"] == earlier
    assert result["before"]["not_before"] == to_iso(start)
    assert _listed(capsys, own_data_dir, kid)["not_before"] == earlier
    shown = trustgw(capsys, "audit", "show", "--data-dir", data, "--json")
    assert shown.status == 0
    assert "key.update" in shown.out and "operator:" in shown.out
    text = trustgw(capsys, "keys", "update", "--data-dir", data, "--region", "110000",
                   "--kid", kid, "--not-before", earlier)  # fmt: skip
    assert text.status == 0 and "window unchanged" in text.out


@pytest.mark.parametrize(
    "args, reason",
    [
        pytest.param(["--kid", "nope", "--not-before", "2026-03-11T08:00:00Z"], "NOT_FOUND",
                     id="unknown-key"),
        pytest.param(["--kid", "K", "--not-before", "2016-03-11T08:00:00+08:00"],
                     "KEY_WINDOW_REFUSED", id="typo-year"),
        pytest.param(["--kid", "K", "--not-before", "2026-03-11T08:00:00"],
                     "TIME_OFFSET_REQUIRED", id="no-offset"),
        pytest.param(["--kid", "K"], "USAGE", id="no-start"),
    ],
)  # fmt: skip
def test_keys_update_refusals_are_one_line(
    args: list[str],
    reason: str,
    own_data_dir: Path,
    partner: tuple[Path, str, object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _, _ = partner
    data = str(own_data_dir)
    ran = trustgw(capsys, "keys", "add", "--data-dir", data, "--region", "110000",
                  "--public-key", str(path), "--kid", "K")  # fmt: skip
    assert ran.status == 0, ran.err
    ran = trustgw(capsys, "keys", "update", "--data-dir", data, "--region", "110000", *args)
    assert one_line_error(ran) == reason


def test_keys_update_refuses_a_revoked_key(
    own_data_dir: Path, partner: tuple[Path, str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    path, kid, _ = partner
    data = str(own_data_dir)
    assert trustgw(capsys, "keys", "add", "--data-dir", data, "--region", "110000",
                   "--public-key", str(path), "--kid", kid).status == 0  # fmt: skip
    assert trustgw(capsys, "keys", "revoke", "--data-dir", data, "--region", "110000",
                   "--kid", kid).status == 0  # fmt: skip
    ran = trustgw(capsys, "keys", "update", "--data-dir", data, "--region", "110000",
                  "--kid", kid, "--not-before", to_iso(REAL_NOW))  # fmt: skip
    assert one_line_error(ran) == "KEY_WINDOW_REFUSED" and "revoked" in ran.err
