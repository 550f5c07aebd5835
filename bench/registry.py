"""A province-sized registry for ``bench/run.py --registry large``, loaded through the real paths.

Every region gets anchors (its partner file, as an operator installs it) and a key set of
``keys`` code-signing keys (the one the simulated partner signs today's codes with, and a
history: expired keys, keys not valid yet, some revoked by a key revocation), then the revoked
codes and holders arrive as signed revocation batches of 10,000 entries
(:data:`keys.statements.MAX_BATCH_ENTRIES`) through :meth:`keys.trustregistry.TrustRegistry.
publish_revocations`: parse, verify a threshold of anchors, key every hash under the gateway's
secret, one transaction per batch (``executemany``). What the partner RPC does, in process and
without a server.

The revoked codes and holders are random SHA-256 values: none is a code or holder of the
benchmark's workload, whose codes must still be recognised.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.regions import REGION_ALGORITHMS
from adapters.simulator import PartnerIssuer, PartnerSimulator
from gateway.runtime.datadir import DataDir
from keys.gatewaykeys import open_keyring
from keys.partner import PartnerSigner, signing_key
from keys.pseudonym import Pseudonymiser
from keys.statements import MAX_BATCH_ENTRIES, KeySetKey, RevocationBatch
from keys.store.factory import open_store
from keys.trustregistry import TrustRegistry

if TYPE_CHECKING:
    from bench.loadgen import RunResult, Target
    from bench.run import Bench


def say(*parts: object) -> None:
    print(*parts, flush=True)


def summarise(runs: Sequence[RunResult]) -> dict[str, float]:
    from bench.run import _summary

    return _summary(runs)


ACTOR = "operator:bench"
DAY = timedelta(days=1)


@dataclass
class Loaded:
    """What was loaded, and how long it took."""

    regions: int = 0
    keys: int = 0
    revoked_keys: int = 0
    codes: int = 0
    holders: int = 0
    batches: int = 0
    keys_s: float = 0.0
    revocations_s: float = 0.0
    partners: dict[str, PartnerSigner] = field(default_factory=dict)

    def rate(self) -> float:
        return (self.codes + self.holders) / max(self.revocations_s, 1e-9)

    def line(self) -> str:
        return (
            f"{self.regions} regions x {self.keys // max(self.regions, 1)} keys "
            f"({self.revoked_keys} revoked) in {self.keys_s:.1f}s; {self.codes:,} revoked codes "
            f"and {self.holders:,} revoked holders in {self.batches} signed batches in "
            f"{self.revocations_s:.1f}s ({self.rate():,.0f} entries/s)"
        )


def _history(issuer: PartnerIssuer, count: int, now: datetime) -> tuple[list[KeySetKey], list[str]]:
    """The region's key set: today's signing key first, then ``count - 1`` keys of its algorithm
    (two thirds expired, a third not valid yet); every tenth expired one is to be revoked."""
    current = issuer.region_key(now - 30 * DAY, now + 365 * DAY)
    keys = [KeySetKey(current.kid, current.public_key, current.not_before, current.not_after)]
    revoke: list[str] = []
    alg = issuer.spec.signing_alg
    for i in range(1, count):
        if i % 3:  # history: a key a month, long expired
            start = now - (40 + 30 * i) * DAY
            key, _ = signing_key(f"{issuer.spec.code}-old-{i}", start, start + 60 * DAY, alg=alg)
            if i % 10 == 1:
                revoke.append(key.kid)
        else:  # the next keys, announced ahead
            start = now + (30 * i) * DAY
            key, _ = signing_key(f"{issuer.spec.code}-next-{i}", start, start + 365 * DAY, alg=alg)
        keys.append(key)
    return keys, revoke


def random_hashes(n: int) -> tuple[str, ...]:
    """``n`` distinct random SHA-256-shaped values (64 lower-case hex digits)."""
    return tuple(os.urandom(32).hex() for _ in range(n))


async def load_large(
    data_dir: Path,
    simulator: PartnerSimulator,
    now: datetime,
    *,
    keys: int = 50,
    codes: int = 1_000_000,
    holders: int = 1_000_000,
    say: Callable[[str], None] = print,
) -> Loaded:
    """Load the registry of a development data dir made by :func:`gateway.demo.prepare`."""
    loaded = Loaded()
    store = await open_store(DataDir(data_dir).database)
    try:
        keyring = await open_keyring(store, None)
        trust = TrustRegistry(
            store, Pseudonymiser(keyring.pseudonym_secret()), None, REGION_ALGORITHMS
        )
        t = time.perf_counter()
        for issuer in simulator.issuers():
            spec = issuer.spec
            partner = PartnerSigner.generate(spec.code, mode=spec.mode, max_age=spec.max_age)
            await trust.install_partner(partner.partner_file(), actor=ACTOR, now=now)
            keyset, revoke = _history(issuer, keys, now)
            await trust.publish_keyset(
                partner.keyset(1, keyset, expires=now + 90 * DAY), caller_region=spec.code, now=now
            )
            for kid in revoke:
                await trust.revoke_key(
                    partner.key_revocation(kid, now - 20 * DAY), caller_region=spec.code, now=now
                )
            loaded.partners[spec.code] = partner
            loaded.regions += 1
            loaded.keys += len(keyset)
            loaded.revoked_keys += len(revoke)
        loaded.keys_s = time.perf_counter() - t
        say(f"  registry: {loaded.regions} regions, {loaded.keys} keys in {loaded.keys_s:.1f}s")
        t = time.perf_counter()
        regions = sorted(loaded.partners)
        left_codes, left_holders = codes, holders
        n = 0
        while left_codes or left_holders:
            region = regions[n % len(regions)]
            take_codes = min(
                left_codes, MAX_BATCH_ENTRIES // 2 if left_holders else MAX_BATCH_ENTRIES
            )
            take_holders = min(left_holders, MAX_BATCH_ENTRIES - take_codes)
            await publish_batch(
                trust,
                loaded.partners[region],
                f"bench-{n}",
                now - (n % 30 + 1) * DAY,
                now,
                codes=take_codes,
                holders=take_holders,
            )
            left_codes -= take_codes
            left_holders -= take_holders
            loaded.codes += take_codes
            loaded.holders += take_holders
            n += 1
            if n % 20 == 0:
                rate = (loaded.codes + loaded.holders) / (time.perf_counter() - t)
                say(f"  registry: {loaded.codes + loaded.holders:,} revocations ({rate:,.0f}/s)")
        loaded.batches = n
        loaded.revocations_s = time.perf_counter() - t
    finally:
        await store.close()
    say("  registry: " + loaded.line())
    return loaded


def batch_envelope(
    partner: PartnerSigner, batch_id: str, effective_at: datetime, *, codes: int, holders: int
) -> bytes:
    """A signed revocation batch of random code and holder hashes (what a partner sends)."""
    batch = RevocationBatch(
        partner.region.code, batch_id, effective_at, random_hashes(codes), random_hashes(holders)
    )
    return partner.envelope(batch.to_signed())


async def publish_batch(
    trust: TrustRegistry,
    partner: PartnerSigner,
    batch_id: str,
    effective_at: datetime,
    now: datetime,
    *,
    codes: int,
    holders: int,
) -> None:
    envelope = batch_envelope(partner, batch_id, effective_at, codes=codes, holders=holders)
    await trust.publish_revocations(envelope, caller_region=partner.region.code, now=now)


# --- the measurement (bench/run.py --registry large) -----------------------------------------


def rss_bytes(pid: int) -> int:
    """The resident set of process ``pid`` (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _p(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class BatchRun:
    """A measured run during which a partner published a revocation batch."""

    entries: int
    apply_s: float  # PublishRevocations sent -> receipt (the gateway applied and re-read it)
    during: list[float]  # latencies (s) of the calls in flight while it was applied
    outside: list[float]  # latencies of the run's other calls
    result: RunResult

    def figures(self) -> dict[str, float]:
        return {
            "entries": self.entries,
            "apply_s": round(self.apply_s, 3),
            "calls_during": len(self.during),
            "p50_ms": round(_p(self.during, 0.5) * 1e3, 2),
            "p99_ms": round(_p(self.during, 0.99) * 1e3, 2),
            "max_ms": round(max(self.during, default=float("nan")) * 1e3, 2),
            "outside_p50_ms": round(_p(self.outside, 0.5) * 1e3, 2),
            "outside_p99_ms": round(_p(self.outside, 0.99) * 1e3, 2),
            "errors": self.result.failures,
        }


class LargePhase:
    """The gateway with the large registry against the gateway with the default one, fresh
    codes (every one new: the revocation lookups run for each), rounds alternating their
    order; then a run of the large one during which a partner publishes a revocation batch."""

    def __init__(self, bench: Bench, default: Target, large: Target) -> None:
        self.bench = bench
        self.default = default
        self.large = large
        self.rss: dict[str, int] = {}
        self.batch: BatchRun | None = None

    async def prime(self) -> None:
        """The large gateway gets what the default one got in Bench.prime: the pool once (its
        convert-mode codes converted), then a warm-up in each form."""
        b = self.bench
        first = await b.run(self.large, "stream", b.gw_pool, 120, limit=len(b.gw_pool))
        b.check_failures(first, "priming")
        for form in ("unary", "stream"):
            warm = await b.run(self.large, form, b.gw_pool, b.opts.prime_warmup)
            b.check_failures(warm, "warm-up")
        self.read_rss("after_warmup")

    def read_rss(self, when: str) -> None:
        for target in (self.default, self.large):
            self.rss[f"{target.name}_{when}"] = rss_bytes(target.pid)

    async def measure(self) -> None:
        b, o = self.bench, self.bench.opts
        for r in range(o.rounds):
            for form in o.forms:
                order = (self.default, self.large) if r % 2 == 0 else (self.large, self.default)
                for target in order:
                    requests = b.gateway_requests("fresh", form)
                    await b.one(target, "large", form, requests, r)
                d = b.results[(self.default.name, "large", form)][-1].rps
                g = b.results[(self.large.name, "large", form)][-1].rps
                r1 = f"{r + 1}/{o.rounds}"
                say(f"  round {r1} registry {form}: default {d:.0f}/s, large {g:.0f}/s")
        self.read_rss("after_runs")

    async def revocation_batch(
        self, publish: Callable[[], Awaitable[object]], entries: int
    ) -> None:
        """A fresh unary run of the large gateway, twice the usual length; a quarter in, the
        partner publishes the batch. The calls in flight while it is applied are compared with
        the run's others (and with the runs without a batch)."""
        b, o = self.bench, self.bench.opts
        duration = max(2 * o.duration, 8.0)
        requests = b.gateway_requests("fresh", "unary", duration)
        await b.run(self.large, "unary", b.gw_pool, o.warmup)  # as before every measured run
        timeline: list[tuple[float, float]] = []
        window: list[float] = []

        async def apply() -> None:
            await asyncio.sleep(duration / 4)
            window.append(time.perf_counter())
            await publish()
            window.append(time.perf_counter())

        result, _ = await asyncio.gather(
            b.run(self.large, "unary", requests, duration, timeline=timeline), apply()
        )
        b.check_failures(result, "measured")
        a0, a1 = window
        during = [t1 - t0 for t0, t1 in timeline if t0 < a1 and t1 > a0]
        outside = [t1 - t0 for t0, t1 in timeline if not (t0 < a1 and t1 > a0)]
        self.batch = BatchRun(entries, a1 - a0, during, outside, result)
        f = self.batch.figures()
        say(
            f"  revocation batch of {entries:,} entries applied in {f['apply_s']:.2f}s while "
            f"serving: {f['calls_during']} calls in flight meanwhile, p99 {f['p99_ms']:.1f} ms "
            f"(max {f['max_ms']:.1f}) against {f['outside_p99_ms']:.1f} ms for the run's other "
            f"calls; {result.rps:.0f}/s over the run, {result.failures} errors"
        )

    def report(self, startup: Mapping[str, float], loaded: Loaded) -> dict[str, object]:
        b, o = self.bench, self.bench.opts
        out: dict[str, object] = {}
        say("")
        say(
            f"{'registry':9}{'form':7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'µs/call':>9}"
            f"{'startup s':>11}{'RSS MB':>9}{'errors':>8}   per round req/s"
        )
        summaries: dict[tuple[str, str], dict[str, float]] = {}
        for target, label in ((self.default, "default"), (self.large, "large")):
            for form in o.forms:
                runs = b.results[(target.name, "large", form)]
                sm = summarise(runs)
                summaries[(label, form)] = sm
                rss = self.rss[f"{target.name}_after_warmup"] / 2**20
                say(
                    f"{label:9}{form:7}{sm['rps']:9.0f}{sm['p50_ms']:9.2f}{sm['p99_ms']:9.2f}"
                    f"{sm['cpu_us_per_call']:9.0f}{startup[target.name]:11.2f}{rss:9.1f}"
                    f"{sum(r.failures for r in runs):8d}   "
                    + " ".join(f"{r.rps:.0f}" for r in runs)
                )
        for form in o.forms:
            d, g = summaries[("default", form)], summaries[("large", form)]
            ratio = g["rps"] / d["rps"]
            per_round = [
                x.rps / y.rps
                for x, y in zip(
                    b.results[(self.large.name, "large", form)],
                    b.results[(self.default.name, "large", form)],
                    strict=True,
                )
            ]
            cpu_ratio = d["cpu_us_per_call"] / g["cpu_us_per_call"]
            say(
                f"large/default registry, fresh {form}: {ratio:.2f} (per round "
                + " ".join(f"{x:.2f}" for x in per_round)
                + f"; goal >= 0.95); server CPU per call default/large {cpu_ratio:.2f}"
            )
            out[f"large_registry_fresh_{form}_ratio"] = round(ratio, 3)
            out[f"large_registry_fresh_{form}_ratio_per_round"] = [round(x, 3) for x in per_round]
            out[f"large_registry_fresh_{form}_cpu_ratio"] = round(cpu_ratio, 3)
            for label in ("default", "large"):
                for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_call"):
                    value = summaries[(label, form)][key]
                    out[f"{label}_registry_fresh_{form}_{key}"] = round(value, 2)
        rss_ratio = (
            self.rss[f"{self.large.name}_after_warmup"]
            / self.rss[f"{self.default.name}_after_warmup"]
        )
        mb = {key: value / 2**20 for key, value in self.rss.items()}
        dn, ln = self.default.name, self.large.name
        say(
            f"RSS after warm-up: default {mb[f'{dn}_after_warmup']:.1f} MB, large "
            f"{mb[f'{ln}_after_warmup']:.1f} MB: ratio {rss_ratio:.2f} (goal <= 1.5); after "
            f"the runs {mb[f'{dn}_after_runs']:.1f} / {mb[f'{ln}_after_runs']:.1f} MB"
        )
        say(
            f"startup (serve start -> ready): default {startup[self.default.name]:.2f}s, "
            f"large {startup[self.large.name]:.2f}s; " + loaded.line()
        )
        out["large_registry_rss_ratio"] = round(rss_ratio, 3)
        for key, value in self.rss.items():
            out[f"rss_mb_{key.replace('-', '_')}"] = round(value / 2**20, 1)
        out["default_registry_startup_s"] = round(startup[self.default.name], 2)
        out["large_registry_startup_s"] = round(startup[self.large.name], 2)
        out["large_registry_load_s"] = round(loaded.keys_s + loaded.revocations_s, 1)
        out["large_registry"] = {
            "regions": loaded.regions,
            "keys": loaded.keys,
            "revoked_keys": loaded.revoked_keys,
            "revoked_codes": loaded.codes,
            "revoked_holders": loaded.holders,
            "batches": loaded.batches,
        }
        if self.batch is not None:
            for key, value in self.batch.figures().items():
                out[f"revocation_batch_{key}"] = value
            out["revocation_batch_p99_without_ms"] = (
                round(summaries[("large", "unary")]["p99_ms"], 2)
                if ("large", "unary") in summaries
                else None
            )
        return out
