"""docs/operations.md "Production topology": its PostgreSQL commands run as written.

The ``sh topology-*`` blocks run line by line with ``bash -c`` as the postgres user against
private clusters (tests/support/pgcluster.py), with only the values the section marks to replace
changed: the example hosts (``db1.example``, ``db2.example``: a loopback address and a cluster's
port), the standby's address, the archive, base-backup and dump directories, and the REPLACE
values of the restore. What each step promises is checked: the standby streams and holds the
primary's rows; promotion makes it writable; the two-host URL reaches whichever accepts writes;
a dump restores the rows; a point-in-time recovery has the rows committed before the target time
and not the one after. Waits are conditions with a deadline (tests/support/wait.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.pgcluster import (
    PgCluster,
    free_port,
    owned_dir,
    private_cluster,
    require_binaries,
    shell,
)
from support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SECTION = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def block(name: str) -> list[str]:
    """The command lines of the ``sh NAME`` block of the section (comments cut)."""
    match = re.search(rf"^\s*```sh {re.escape(name)}\n(.*?)^\s*```\n", SECTION, re.S | re.M)
    assert match, f"docs/operations.md has no ```sh {name} block"
    lines = [line.strip() for line in match.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def replaced(line: str, values: dict[str, str]) -> str:
    for old, new in values.items():
        line = line.replace(old, new)
    assert "REPLACE" not in line and ".example" not in line, f"a value left to replace: {line}"
    return line


def env_of(cluster: PgCluster) -> dict[str, str]:
    """The documented setting: PGDATA the cluster's data, psql reaching it by default."""
    return {
        "PGDATA": str(cluster.data),
        "PGHOST": "127.0.0.1",
        "PGPORT": str(cluster.port),
        "PGUSER": "postgres",
    }


def value(out: str) -> str:
    """The single value of a psql table printed as written (header, dashes, value, count)."""
    lines = [line.strip() for line in out.splitlines()]
    dashes = next(i for i, line in enumerate(lines) if set(line) == {"-"})
    return lines[dashes + 1]


def host(cluster: PgCluster) -> str:
    """What ``-h db1.example`` becomes for ``cluster``."""
    return f"127.0.0.1 -p {cluster.port}"


@pytest.fixture
def primary() -> Iterator[PgCluster]:
    """A private cluster; a test's other clusters go in ``primary.root`` (stopped here too)."""
    with private_cluster() as cluster:
        try:
            yield cluster
        finally:
            for data in cluster.root.iterdir():
                if data != cluster.data and (data / "postmaster.pid").exists():
                    PgCluster(cluster.bin, cluster.root, data, 0).stop("immediate")


def configure_primary(primary: PgCluster) -> Path:
    """Run the ``topology-primary`` block; returns the WAL archive directory."""
    archive = owned_dir(primary.root / "wal-archive")
    values = {
        "/srv/wal-archive": str(archive),
        "10.0.0.22/32": "127.0.0.1/32",
        "REPLACE-with-a-secret": "topology-test",
    }
    for line in block("topology-primary"):
        shell(replaced(line, values), env_of(primary))
    assert primary.psql("SHOW archive_mode") == "on"
    assert primary.psql("SELECT rolreplication FROM pg_roles WHERE rolname = 'replicator'") == "t"
    return archive


def test_a_standby_follows_the_primary_and_is_promoted_when_it_is_lost(primary) -> None:
    configure_primary(primary)
    primary.psql("CREATE DATABASE trustgw")
    primary.psql("CREATE TABLE conversions (id int PRIMARY KEY)", "trustgw")
    primary.psql("INSERT INTO conversions VALUES (1)", "trustgw")
    standby = PgCluster(primary.bin, primary.root, primary.root / "standby", free_port())
    on_standby = env_of(standby)
    out = []
    for line in block("topology-standby"):
        out.append(shell(replaced(line, {"db1.example": host(primary)}), on_standby))
    assert value(out[2]) == "t"  # pg_is_in_recovery() on the standby
    wait_until(
        lambda: "streaming" in primary.psql("SELECT state FROM pg_stat_replication"),
        what="the primary lists the standby as streaming",
    )
    primary.psql("INSERT INTO conversions VALUES (2)", "trustgw")
    wait_until(
        lambda: standby.psql("SELECT count(*) FROM conversions", "trustgw") == "2",
        what="the standby replays the primary's rows",
    )
    with pytest.raises(RuntimeError, match="read-only"):
        standby.psql("INSERT INTO conversions VALUES (3)", "trustgw")

    # The two-host URL skips a host that does not accept writes (the standby listed first).
    (url_line,) = block("topology-url")

    def url(first: PgCluster, second: PgCluster) -> str:
        return replaced(
            url_line,
            {
                "trustgw@db1.example,db2.example/trustgw": (
                    f"postgres@127.0.0.1:{first.port},127.0.0.1:{second.port}/trustgw"
                )
            },
        )

    assert value(shell(url(standby, primary), {})) == "f"

    primary.stop("immediate")  # the primary is lost (and fenced: it stays down)
    promoted = [shell(line, on_standby) for line in block("topology-promote")]
    assert value(promoted[-1]) == "f"
    standby.psql("INSERT INTO conversions VALUES (3)", "trustgw")  # writable now
    assert value(shell(url(primary, standby), {})) == "f"  # the lost host is skipped

    # A dump of the new primary restores into a scratch database.
    backup = owned_dir(primary.root / "backup")
    lines = [
        replaced(line, {"db1.example": host(standby), "/backup": str(backup)})
        for line in block("topology-dump")
    ]
    assert lines[-1].startswith("dropdb")
    for line in lines[:-1]:
        shell(line, on_standby)
    assert standby.psql("SELECT count(*) FROM conversions", "trustgw_restore_check") == "3"
    shell(lines[-1], on_standby)
    assert list(backup.glob("trustgw-*.dump"))
    standby.stop("fast")


def test_a_point_in_time_recovery_stops_at_the_target_time(primary) -> None:
    require_binaries()
    archive = configure_primary(primary)
    primary.psql("CREATE DATABASE trustgw")
    primary.psql("CREATE TABLE audit (entry text)", "trustgw")
    base = owned_dir(primary.root / "base")
    (backup_line,) = block("topology-basebackup")
    values = {"db1.example": host(primary), "/srv/base": str(base)}
    shell(replaced(backup_line, values), env_of(primary))
    (taken,) = list(base.iterdir())
    primary.psql("INSERT INTO audit VALUES ('before')", "trustgw")
    target = primary.psql("SELECT clock_timestamp()")  # after 'before' committed
    primary.psql("INSERT INTO audit VALUES ('after')", "trustgw")
    primary.psql("SELECT pg_switch_wal()")  # the segment holding 'after' is complete
    primary.stop("fast")  # a clean shutdown archives every completed segment
    assert list(archive.iterdir())

    restored_data = owned_dir(primary.root / "restored")
    restored = PgCluster(primary.bin, primary.root, restored_data, free_port())
    values = {
        "/srv/base/REPLACE-2026-12-01": str(taken),
        "/srv/wal-archive": str(archive),
        "REPLACE-2026-12-03 11:55:00+00": target,
    }
    for line in block("topology-pitr"):
        shell(replaced(line, values), env_of(restored))
    wait_until(
        lambda: restored.psql("SELECT pg_is_in_recovery()") == "f",
        what="the restored server reaches the target and opens for writes",
    )
    assert restored.psql("SELECT entry FROM audit ORDER BY entry", "trustgw") == "before"
    restored.stop("fast")
