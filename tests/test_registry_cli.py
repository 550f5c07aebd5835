"""The trust-registry commands through ``main([...])``: partner, revocations, trustlist, audit."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from registry_grpc_support import DAY, NOW, OTHER, SHOW, listed, partner_for
from support.aio import run

from gateway.cli import main
from keys.crypto import b64url_encode
from keys.partner import PartnerSigner
from keys.pseudonym import Pseudonymiser
from keys.statements import code_hash
from keys.store import SQLiteStore
from keys.trustregistry import TrustRegistry

PARTNER = partner_for(SHOW)


class Cli:
    """Runs ``trustgw`` against one data directory; returns (exit status, stdout, stderr)."""

    def __init__(self, data_dir: Path, capsys: Any) -> None:
        self.data_dir = data_dir
        self.capsys = capsys

    def __call__(self, *args: str, data_dir: bool = True) -> tuple[int, str, str]:
        self.capsys.readouterr()
        argv = list(args)
        if data_dir:
            argv[2:2] = ["--data-dir", str(self.data_dir)]
        status = main(argv)
        out, err = self.capsys.readouterr()
        return status, out, err

    def json(self, *args: str) -> Any:
        status, out, err = self(*args, "--json")
        assert status == 0, err
        return json.loads(out)


@pytest.fixture
def cli(prepared_dir, capsys) -> Cli:
    return Cli(prepared_dir(NOW), capsys)


def write_partner_file(tmp_path: Path, partner: PartnerSigner, name: str = "p.json") -> str:
    path = tmp_path / name
    path.write_bytes(partner.partner_file())
    return str(path)


def submit(data_dir: Path, *steps: tuple[str, PartnerSigner, bytes]) -> None:
    """Partner submissions applied to the data directory's registry, as the server would."""

    async def go() -> None:
        store = await SQLiteStore.open(data_dir / "trustgw.db")
        try:
            trust = TrustRegistry(store, Pseudonymiser(b"p" * 32))
            for kind, partner, data in steps:
                apply = getattr(trust, kind)
                await apply(data, caller_region=partner.region.code, now=NOW)
        finally:
            await store.close()

    run(go())


# --- partner ----------------------------------------------------------------------------------


def test_partner_add_is_idempotent_and_guards_the_anchors(cli, tmp_path) -> None:
    path = write_partner_file(tmp_path, PARTNER)
    first = cli.json("partner", "add", "--file", path)
    assert (first["region"], first["created"], first["anchors_changed"]) == (SHOW.code, False, True)
    assert first["fingerprint"] == PARTNER.anchors.anchor_set().fingerprint()
    assert cli.json("partner", "add", "--file", path)["duplicate"] is True
    status, out, _ = cli("partner", "add", "--file", path)
    assert status == 0 and "unchanged" in out and first["fingerprint"] in out

    other_anchors = write_partner_file(tmp_path, partner_for(SHOW), "other.json")
    status, _, err = cli("partner", "add", "--file", other_anchors)
    assert (status, err.split(":")[:2]) == (1, ["trustgw", " ALREADY_EXISTS"])
    replaced = cli.json("partner", "add", "--file", other_anchors, "--replace-anchors")
    assert (replaced["anchors_changed"], replaced["anchors_generation"]) == (True, 2)


@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [
        pytest.param(b"not json", 1, "MALFORMED", id="not-json"),
        pytest.param(b'{"type": "trustgw/partner/v1"}', 1, "MALFORMED", id="members-missing"),
        pytest.param(b"{" + b" " * 70_000 + b"}", 1, "OVERSIZED", id="oversized"),
        pytest.param(None, 2, "cannot read", id="missing-file"),
    ],
)
def test_partner_add_refuses_bad_files(cli, tmp_path, content, status, reason) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_bytes(content)
    result, _, err = cli("partner", "add", "--file", str(path))
    assert result == status and reason in err


def test_partner_list_show_and_anchors(cli, tmp_path) -> None:
    cli("partner", "add", "--file", write_partner_file(tmp_path, PARTNER))
    rows = {r["region"]: r for r in cli.json("partner", "list")}
    assert len(rows) == 14
    assert (rows[SHOW.code]["threshold"], rows[SHOW.code]["anchors"]) == (2, 3)
    assert rows[OTHER.code]["anchors"] == 0
    status, out, _ = cli("partner", "list")
    assert status == 0 and f"{SHOW.code}  " in out and "2/3" in out

    shown = cli.json("partner", "show", SHOW.code)
    assert (shown["region"], shown["keyset_version"], len(shown["signing_keys"])) == (
        SHOW.code,
        0,
        1,
    )
    status, out, _ = cli("partner", "show", SHOW.code)
    assert status == 0 and "anchors: 2 of 3" in out

    anchors = cli.json("partner", "anchors", SHOW.code)
    assert (anchors["threshold"], anchors["generation"]) == (2, 1)
    assert [a["kid"] for a in anchors["anchors"]] == [kid for kid, _ in PARTNER.anchors.keys]
    status, out, _ = cli("partner", "anchors", SHOW.code)
    assert status == 0 and "2 of 3 anchors" in out


@pytest.mark.parametrize(
    ("args", "status", "reason"),
    [
        pytest.param(("partner", "show", "999999"), 1, "NOT_FOUND", id="show-unknown-region"),
        pytest.param(("partner", "anchors", OTHER.code), 1, "ANCHORS_MISSING", id="no-anchors"),
        pytest.param(("partner", "disable", "999999"), 1, "NOT_FOUND", id="disable-unknown"),
        pytest.param(("partner", "enable", "999999"), 1, "NOT_FOUND", id="enable-unknown"),
        pytest.param(("partner", "show", "beijing"), 2, "6-digit", id="not-a-region-code"),
    ],
)
def test_partner_commands_refuse_unknown_regions(cli, args, status, reason) -> None:
    result, _, err = cli(*args)
    assert result == status and reason in err


def test_partner_disable_and_enable(cli) -> None:
    status, out, _ = cli("partner", "disable", SHOW.code)
    assert status == 0 and "disabled" in out
    assert cli.json("partner", "show", SHOW.code)["enabled"] is False
    assert cli("partner", "enable", SHOW.code)[0] == 0
    assert cli.json("partner", "show", SHOW.code)["enabled"] is True
    actions = [(e["actor"], e["action"]) for e in cli.json("audit", "show")["entries"]]
    assert actions[-2:] == [("operator:cli", "region.disable"), ("operator:cli", "region.enable")]


# --- revocations ------------------------------------------------------------------------------


def test_revocations_list_counts_batches_and_hides_hashes(cli, tmp_path) -> None:
    cli("partner", "add", "--file", write_partner_file(tmp_path, PARTNER))
    batch = PARTNER.revocations(
        "b-7", NOW - DAY, code_ids=["c1", "c2"], holder_ids=["11010119900307001X"]
    )
    submit(cli.data_dir, ("publish_revocations", PARTNER, batch))
    hashed = code_hash(SHOW.code, "c1")

    listing = cli.json("revocations", "list")
    assert listing["regions"] == [{"region": SHOW.code, "codes": 2, "holders": 1}]
    assert [(b["batch_id"], b["codes"], b["holders"]) for b in listing["batches"]] == [
        ("b-7", 2, 1)
    ]
    assert "codes" not in listing and hashed not in json.dumps(listing)
    status, out, _ = cli("revocations", "list", "--hashes")  # text never shows hashes
    assert status == 0 and "b-7" in out and hashed not in out
    with_hashes = cli.json("revocations", "list", "--hashes")
    keyed = Pseudonymiser(b"p" * 32).code_key(SHOW.code, "c1")  # the secret submit() used
    assert keyed in {c["code_key"] for c in with_hashes["codes"]}
    assert hashed not in json.dumps(with_hashes)  # the partner's unkeyed hash is not kept
    assert "11010119900307001X" not in json.dumps(with_hashes)  # pseudonyms only
    assert cli.json("revocations", "list", "--region", OTHER.code)["batches"] == []
    status, _, err = cli("revocations", "list", "--region", "x")
    assert status == 2 and "6-digit" in err


# --- trustlist --------------------------------------------------------------------------------


@pytest.fixture
def exported(cli, tmp_path) -> dict[str, Any]:
    """Two trust-list versions exported (full v1, full v2, delta v1->v2) and the pinned keys."""
    cli("partner", "add", "--file", write_partner_file(tmp_path, PARTNER))
    pinned = tmp_path / "gateway-keys.json"
    assert cli("keys", "export", "--out", str(pinned))[0] == 0
    files = {"pinned": str(pinned)}
    first = cli.json("trustlist", "export", "--out", str(tmp_path / "v1.json"))
    files["v1"] = first["out"]
    from adapters.simulator import PartnerIssuer

    issuer = PartnerIssuer.generate(SHOW.code, kid="show-new")
    submit(
        cli.data_dir,
        ("publish_keyset", PARTNER, PARTNER.keyset(1, [listed(issuer)], expires=NOW + DAY)),
    )
    files["v2"] = cli.json("trustlist", "export", "--out", str(tmp_path / "v2.json"))["out"]
    delta = cli.json(
        "trustlist", "export", "--since", str(first["version"]), "--out", str(tmp_path / "d.json")
    )
    assert delta["since"] == first["version"]
    files["delta"] = delta["out"]
    files["version"] = first["version"]
    return files


def verify(cli: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    status, out, err = cli("trustlist", "verify", *args, "--json", data_dir=False)
    return status, json.loads(out) if out else {"err": err}


def test_trustlist_export_and_verify(cli, exported) -> None:
    pinned = ("--pinned", exported["pinned"])
    status, result = verify(cli, *pinned, exported["v1"])
    assert (status, result["verdict"], result["version"]) == (0, "accept", exported["version"])
    status, result = verify(cli, *pinned, "--base", exported["v1"], exported["delta"])
    assert (status, result["version"]) == (0, exported["version"] + 1)
    status, out, _ = cli("trustlist", "verify", *pinned, exported["v2"], data_dir=False)
    assert status == 0 and out.startswith("ACCEPTED")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("rollback", "TRUSTLIST_ROLLBACK", id="rolled-back"),
        pytest.param("expired", "TRUSTLIST_EXPIRED", id="expired"),
        pytest.param("tampered", "SIGNATURE_INVALID", id="signature"),
        pytest.param("delta-without-base", "TRUSTLIST_CONFLICT", id="delta-without-base"),
    ],
)
def test_trustlist_verify_rejects(cli, exported, tmp_path, case, reason) -> None:
    args = ["--pinned", exported["pinned"]]
    target = exported["v1"]
    if case == "rollback":
        args += ["--last-version", str(exported["version"] + 1)]
    elif case == "expired":
        args += ["--at", str(int((NOW + 3 * DAY).timestamp()))]
    elif case == "tampered":
        envelope = json.loads(Path(target).read_bytes())
        for signature in envelope["signatures"]:
            signature["sig"] = b64url_encode(bytes(64))
        target = str(tmp_path / "tampered.json")
        Path(target).write_text(json.dumps(envelope))
    else:
        target = exported["delta"]
    status, result = verify(cli, *args, target)
    assert (status, result["verdict"], result["reason"]) == (1, "reject", reason)
    assert result["version"] is None and result["detail"]
    status, out, _ = cli("trustlist", "verify", *args, target, data_dir=False)
    assert status == 1 and out.startswith(f"REJECTED {reason}")


def _resigned(cli: Cli, source: str, out: Path, *, issued_at: int, expires: int) -> str:
    """The list in ``source`` with another validity, signed by the gateway's own trustlist key
    (as whoever holds that key could sign it, inside its window or not)."""
    from keys.jsonutil import canonical_json
    from keys.keystore import KeyRole
    from keys.signed import Envelope
    from tests.support.keyring import stored_keys

    body = json.loads(Envelope.from_bytes(Path(source).read_bytes()).signed)
    body.update(issued_at=issued_at, expires=expires)
    key_dir = stored_keys(cli.data_dir)
    signers = key_dir.signers(KeyRole.TRUSTLIST, NOW)
    envelope = Envelope.sign(canonical_json(body), [(info.kid, key) for info, key in signers])
    out.write_bytes(envelope.to_bytes())
    return str(out)


@pytest.mark.doc("trust-registry.md §9", "trust-registry.md §13")
def test_trustlist_verify_pins_each_key_with_its_validity_window(cli, exported, tmp_path) -> None:
    """The pinned trustlist keys keep the window the key file gives them: a list signed by the
    right key but issued before its not_before, or expiring after its not_after, is refused
    (SIGNATURE_INVALID); the verdict states each pinned key's window; a revoked key is not
    pinned."""
    keys = json.loads(Path(exported["pinned"]).read_text())
    (entry,) = [k for k in keys["keys"] if k["role"] == "trustlist"]
    not_before, not_after = entry["not_before"], entry["not_after"]
    pinned = ("--pinned", exported["pinned"])
    inside = _resigned(
        cli, exported["v1"], tmp_path / "inside.json",
        issued_at=int(NOW.timestamp()), expires=int(NOW.timestamp()) + 3600,
    )  # fmt: skip
    late = _resigned(
        cli, exported["v1"], tmp_path / "late.json",
        issued_at=not_after - 3600, expires=not_after + 1,
    )  # fmt: skip
    early = _resigned(
        cli, exported["v1"], tmp_path / "early.json",
        issued_at=not_before - 1, expires=not_before + 3600,
    )  # fmt: skip
    status, result = verify(cli, *pinned, inside)
    assert (status, result["verdict"]) == (0, "accept"), result
    from keys.timeutil import from_unix, to_iso

    window = {"kid": entry["kid"], "not_before": to_iso(from_unix(not_before)),
              "not_after": to_iso(from_unix(not_after))}  # fmt: skip
    assert result["pinned"] == [window]
    for target, at in ((late, not_after - 60), (early, not_before)):
        status, result = verify(cli, *pinned, "--at", str(at), target)
        assert (status, result["reason"]) == (1, "SIGNATURE_INVALID"), (target, result)
        assert result["pinned"] == [window]
    status, out, _ = cli("trustlist", "verify", *pinned, inside, data_dir=False)
    assert status == 0 and out.startswith("ACCEPTED")
    assert (
        f"  pinned trustlist key {entry['kid']}: signs lists issued from "
        f"{window['not_before']}, expiring by {window['not_after']}"
    ) in out.splitlines()
    # A key the file says is revoked is not pinned: nothing it signs is trusted.
    entry["status"] = "revoked"
    revoked = tmp_path / "revoked-keys.json"
    revoked.write_text(json.dumps(keys))
    status, _, err = cli("trustlist", "verify", "--pinned", str(revoked), inside, data_dir=False)
    assert status == 2 and "every one in it is revoked" in err


def test_trustlist_usage_errors_exit_2(cli, exported, tmp_path) -> None:
    no_trustlist_key = tmp_path / "attest-only.json"
    keys = json.loads(Path(exported["pinned"]).read_text())
    keys["keys"] = [k for k in keys["keys"] if k["role"] != "trustlist"]
    no_trustlist_key.write_text(json.dumps(keys))
    for args in (
        ["--pinned", str(no_trustlist_key), exported["v1"]],
        ["--pinned", exported["pinned"], str(tmp_path / "missing.json")],
        ["--pinned", exported["pinned"], "--last-version", "-1", exported["v1"]],
        ["--pinned", exported["pinned"], "--at", "yesterday", exported["v1"]],
    ):
        assert cli("trustlist", "verify", *args, data_dir=False)[0] == 2, args
    assert cli("trustlist", "export", "--since", "-1", "--out", str(tmp_path / "x"))[0] == 2


# --- audit ------------------------------------------------------------------------------------


def test_audit_show_and_verify(cli, tmp_path) -> None:
    cli("partner", "add", "--file", write_partner_file(tmp_path, PARTNER))
    shown = cli.json("audit", "show")
    entries = shown["entries"]
    assert entries[-1]["action"] == "partner.update" and entries[-1]["actor"] == "operator:cli"
    assert shown["head"]["count"] == len(entries)
    page = cli.json("audit", "show", "--after", "2", "--limit", "3")["entries"]
    assert [e["seq"] for e in page] == [3, 4, 5]
    status, out, _ = cli("audit", "show", "--limit", "2")
    assert status == 0 and "partner.update" not in out and "head" in out
    assert cli("audit", "show", "--limit", "0")[0] == 2

    verified = cli.json("audit", "verify")
    head = verified["head"]
    assert verified["ok"] is True and head == f"{len(entries)}:{entries[-1]['hash']}"
    status, out, _ = cli("audit", "verify", "--expect-head", head)
    assert status == 0 and head in out
    assert cli("audit", "verify", "--expect-head", "12:abc")[0] == 2


def test_audit_verify_detects_an_edited_row(cli, tmp_path) -> None:
    cli("partner", "add", "--file", write_partner_file(tmp_path, PARTNER))
    with sqlite3.connect(cli.data_dir / "trustgw.db") as conn:
        conn.execute("UPDATE audit_log SET actor = 'operator:mallory' WHERE seq = 2")
    status, out, err = cli("audit", "verify")
    assert status == 1 and err.startswith("trustgw: AUDIT_TAMPERED: audit entry 2")
    status, out, _ = cli("audit", "verify", "--json")
    result = json.loads(out)
    assert (status, result["ok"], result["reason"], result["seq"]) == (
        1,
        False,
        "AUDIT_TAMPERED",
        "2",
    )


def test_keys_add_and_revoke_are_audited_as_the_operator(cli, tmp_path, simulator) -> None:
    issuer = simulator.issuer(OTHER.code)
    key_file = tmp_path / "k.jwk"
    key_file.write_text(json.dumps(issuer.key.public_key().to_jwk()))
    add = ("keys", "add", "--region", OTHER.code, "--public-key", str(key_file), "--kid", "k2")
    assert cli(*add)[0] == 0
    at = str(int((NOW - timedelta(hours=1)).timestamp()))
    assert cli("keys", "revoke", "--region", OTHER.code, "--kid", "k2", "--at", at)[0] == 0
    entries = cli.json("audit", "show")["entries"][-2:]
    assert [(e["actor"], e["action"]) for e in entries] == [
        ("operator:cli", "key.add"),
        ("operator:cli", "key.revoke"),
    ]


def test_partner_list_reports_an_unusable_data_directory(tmp_path, capsys) -> None:
    cli = Cli(tmp_path / "missing" / "data", capsys)
    status, _, err = cli("partner", "list")
    assert status == 2 and err.startswith("trustgw: USAGE: partner list: argument --data-dir: ")
    assert "not a gateway data directory" in err and err.count("\n") == 1
