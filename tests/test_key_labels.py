"""The status of the gateway's own keys during a staged rotation, the same on every surface."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cli_support import trustgw
from support.clock import T0

from gateway import tokens
from keys.crypto import Algorithm, PrivateKey
from keys.keylabels import KeyLabel, key_labels, signing_key
from keys.keystore import GatewayKeyInfo, KeyDirectory, KeyRole
from keys.model import KeyStatus
from keys.registry import RegistrySnapshot
from keys.timeutil import parse_time
from keys.trustpublisher import build_content

HOUR = timedelta(hours=1)
YEAR = timedelta(days=365)
ATTEST = KeyRole.ATTEST
PUBLIC = PrivateKey.generate(Algorithm.EDDSA).public_key()


def key(kid: str, start: timedelta, status: KeyStatus, role: KeyRole = ATTEST) -> GatewayKeyInfo:
    return GatewayKeyInfo(role, kid, PUBLIC, T0 + start, T0 + start + YEAR, status)


# A staged rotation at T0 + 1 day of a key made at T0, activating one hour later: what the manifest
# stores (the rotation marks the old key retired at once) and what each key does at a given time.
OLD = key("old", timedelta(0), KeyStatus.RETIRED)
NEW = key("new", timedelta(days=1) + HOUR, KeyStatus.ACTIVE)
ROTATED = timedelta(days=1)

CASES = [
    pytest.param([key("only", timedelta(0), KeyStatus.ACTIVE)], ROTATED,
                 {"only": KeyLabel.ACTIVE}, id="one-key-signs"),
    pytest.param([OLD, NEW], ROTATED, {"old": KeyLabel.ACTIVE, "new": KeyLabel.PENDING},
                 id="staged-rotation-before-activation-old-still-signs"),
    pytest.param([OLD, NEW], ROTATED + HOUR - timedelta(seconds=1),
                 {"old": KeyLabel.ACTIVE, "new": KeyLabel.PENDING},
                 id="staged-rotation-one-second-before"),
    pytest.param([OLD, NEW], ROTATED + HOUR, {"old": KeyLabel.RETIRED, "new": KeyLabel.ACTIVE},
                 id="staged-rotation-at-activation-new-signs"),
    pytest.param([OLD, NEW], YEAR + HOUR, {"old": KeyLabel.RETIRED, "new": KeyLabel.ACTIVE},
                 id="old-key-past-its-window"),
    pytest.param([OLD, replace(NEW, status=KeyStatus.REVOKED)], ROTATED + 2 * HOUR,
                 {"old": KeyLabel.ACTIVE, "new": KeyLabel.REVOKED},
                 id="new-key-withdrawn-old-signs-again"),
    pytest.param([replace(OLD, status=KeyStatus.REVOKED), NEW], ROTATED,
                 {"old": KeyLabel.REVOKED, "new": KeyLabel.PENDING},
                 id="old-key-withdrawn-before-the-new-one-signs"),
    pytest.param([OLD, NEW, key("later", timedelta(days=2), KeyStatus.ACTIVE)],
                 ROTATED + 2 * HOUR,
                 {"old": KeyLabel.RETIRED, "new": KeyLabel.ACTIVE, "later": KeyLabel.PENDING},
                 id="two-rotations-announced"),
    pytest.param([OLD, NEW, key("t", timedelta(0), KeyStatus.ACTIVE, KeyRole.TRUSTLIST)],
                 ROTATED, {"old": KeyLabel.ACTIVE, "new": KeyLabel.PENDING, "t": KeyLabel.ACTIVE},
                 id="each-role-has-its-own-active-key"),
    pytest.param([key("early", timedelta(days=5), KeyStatus.ACTIVE)], ROTATED,
                 {"early": KeyLabel.PENDING}, id="no-key-signs-yet"),
]  # fmt: skip


@pytest.mark.parametrize(("infos", "at", "expected"), CASES)
def test_a_key_is_labelled_by_what_it_does_at_the_time(
    infos: list[GatewayKeyInfo], at: timedelta, expected: dict[str, KeyLabel]
) -> None:
    labels = key_labels(infos, T0 + at)
    assert {kid: label for (_, kid), label in labels.items()} == expected


@pytest.mark.parametrize(("infos", "at", "expected"), CASES)
def test_the_active_label_names_exactly_the_key_that_signs(
    infos: list[GatewayKeyInfo], at: timedelta, expected: dict[str, KeyLabel]
) -> None:
    signers = {signing_key(infos, role, T0 + at) for role in KeyRole}
    active = {kid for kid, label in expected.items() if label is KeyLabel.ACTIVE}
    assert {s.kid for s in signers if s is not None} == active


def test_the_key_directory_signs_with_the_key_labelled_active(tmp_path: Path) -> None:
    keys = KeyDirectory.create(tmp_path / "keys", dev=True, passphrase=None, now=T0)
    old, _ = keys.signer(ATTEST, T0)
    new = keys.rotate(ATTEST, T0 + ROTATED, activate_at=T0 + ROTATED + HOUR)
    for at, signer in ((ROTATED, old), (ROTATED + HOUR, new)):
        labels = key_labels(keys.public_keys(), T0 + at)
        assert keys.signer(ATTEST, T0 + at)[0].kid == signer.kid
        assert labels[("attest", signer.kid)] is KeyLabel.ACTIVE


def test_the_trust_file_and_the_trust_list_carry_the_labels(tmp_path: Path) -> None:
    keys = KeyDirectory.create(tmp_path / "keys", dev=True, passphrase=None, now=T0)
    old, _ = keys.signer(ATTEST, T0)
    new = keys.rotate(ATTEST, T0 + ROTATED, activate_at=T0 + ROTATED + HOUR)

    def statuses(now: datetime) -> tuple[dict[str, str], dict[str, str]]:
        trust = tokens.GatewayTrust.from_key_infos(keys.public_keys(), now=now)
        listed = build_content(RegistrySnapshot(1, {}), keys.public_keys(), now=now)["keys"]
        return (
            {k.kid: k.status for k in trust.keys if k.role == "attest"},
            {k["kid"]: k["status"] for k in listed if k["role"] == "attest"},
        )

    before = {old.kid: "active", new.kid: "pending"}
    after = {old.kid: "retired", new.kid: "active"}
    assert statuses(T0 + ROTATED) == (before, before)
    assert statuses(T0 + ROTATED + HOUR) == (after, after)


def test_a_trust_file_with_a_pending_key_verifies_what_that_key_signs_later(
    tmp_path: Path,
) -> None:
    keys = KeyDirectory.create(tmp_path / "keys", dev=True, passphrase=None, now=T0)
    new = keys.rotate(ATTEST, T0 + ROTATED, activate_at=T0 + ROTATED + HOUR)
    exported = tokens.GatewayTrust.from_key_infos(keys.public_keys(), now=T0 + ROTATED)
    trust = tokens.GatewayTrust.from_json(json.dumps(exported.to_json()))
    assert trust.find(new.kid, "attest").status == "pending"
    assert trust.key(new.kid, "attest", T0 + ROTATED + 2 * HOUR).kid == new.kid


def test_keys_list_and_export_show_a_staged_rotation_the_right_way_round(
    own_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(own_data_dir)

    def attest_statuses(*extra: str) -> dict[str, str]:
        ran = trustgw(capsys, "keys", "list", "--data-dir", data, "--json", *extra)
        assert ran.status == 0, ran.err
        return {r["kid"]: r["status"] for r in ran.json() if r["role"] == "attest"}

    (old,) = attest_statuses()
    ran = trustgw(capsys, "keys", "rotate", "--data-dir", data, "--role", "attest",
                  "--activate-in", "1h", "--json")  # fmt: skip
    assert ran.status == 0, ran.err
    new = ran.json()["kid"]
    starts = parse_time(ran.json()["not_before"])
    just_before = str(int(starts.timestamp()) - 1)
    at_start = str(int(starts.timestamp()))

    assert attest_statuses() == {old: "active", new: "pending"}  # now: the hour has not passed
    assert attest_statuses("--at", just_before) == {old: "active", new: "pending"}
    assert attest_statuses("--at", at_start) == {old: "retired", new: "active"}
    out = tmp_path / "trust.json"
    for at, expected in ((just_before, ("active", "pending")), (at_start, ("retired", "active"))):
        ran = trustgw(capsys, "keys", "export", "--data-dir", data, "--out", str(out), "--at", at)
        assert ran.status == 0, ran.err
        listed = {k["kid"]: k["status"] for k in json.loads(out.read_text())["keys"]}
        assert (listed[old], listed[new]) == expected


def test_get_gateway_keys_carries_the_labels_at_the_time_of_the_call(tmp_path: Path) -> None:
    import asyncio
    from types import SimpleNamespace
    from typing import Any, cast

    from support.clock import REAL_NOW  # the servicer reads the clock, once per call

    from gateway.api.v1 import recognition_pb2 as pb
    from gateway.grpc.recognition import RecognitionService

    keys = KeyDirectory.create(
        tmp_path / "keys", dev=True, passphrase=None, now=REAL_NOW - timedelta(days=1)
    )
    old, _ = keys.signer(ATTEST, REAL_NOW)
    new = keys.rotate(ATTEST, REAL_NOW, activate_at=REAL_NOW + timedelta(days=1))
    service = RecognitionService(cast(Any, SimpleNamespace(published_keys=keys.public_keys)))
    reply = asyncio.run(service.GetGatewayKeys(pb.GetGatewayKeysRequest(), cast(Any, None)))
    statuses = {k.key_id: k.status for k in reply.keys if k.role == "attest"}
    assert statuses == {old.kid: "active", new.kid: "pending"}
