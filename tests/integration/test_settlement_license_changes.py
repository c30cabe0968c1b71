"""The settlement worker follows License changes (issue 11): renewal invoices for every
renewal, whoever made it, and statements that pro-rate a fee change inside a period.
Real PostgreSQL (HQ's ledger), Redis streams and kube-apiserver."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import psycopg
import yaml

from kameng.kube.client import Kube
from kameng.ledger import invoices
from kameng.ledger.rules import Rates
from kameng.ledger.verify import verify
from kameng.licensing.term import Term, parse_time
from kameng.workers.settlement.licenses import LicenseBook
from tests.support.ledger import ROOT, event, license_obj, setup_ledger

from .test_kubectl_plugin import plugin
from .test_settlement import _drain, _one, _worker, dsn, rp  # noqa: F401  (fixtures)

YEAR_S = 365 * 86400


async def _invoices(dsn_: str, site: str) -> list[tuple[str, int]]:
    return [(k, a) for k, a in await _one(
        dsn_, "SELECT key, amount FROM ledger.entries WHERE kind = 'invoice' AND site = %s"
              " ORDER BY id", site)]


def _end(kubectl, name: str) -> str:
    return json.loads(kubectl("get", "license", name, "-o", "json").stdout)["spec"]["term"]["end"]


async def test_every_renewal_is_invoiced_once_across_restarts_and_hq_s_page(
        dsn, rp, kubectl, kubeconfig, devenv):  # noqa: F811
    await setup_ledger(dsn)
    site = f"renew-{uuid.uuid4().hex[:6]}"
    lic = license_obj(site)  # 12 000.00 a year, FromExpiry
    lic["metadata"] = {"name": site}
    lic["spec"]["term"] = {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
    # The SubSite object only (no operator runs here): `kubectl kameng renew` finds the
    # License through it.
    ss = yaml.safe_load((ROOT / "manifests/samples/subsite-demo.yaml").read_text())
    ss["metadata"]["name"] = site
    ss["spec"] |= {"licenseRef": site, "domain": f"{site}.example"}
    kubectl("apply", "-f", str(ROOT / "manifests/samples/rolepolicy-standard.yaml"))
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                  "items": [lic, ss]}))
    kube = Kube.from_environment(kubeconfig)
    try:
        w = _worker(dsn, rp, LicenseBook(kube, ttl=0.0))
        await w.housekeeping()  # first sight: the term it was sold with, no invoice
        assert await _invoices(dsn, site) == []
        assert await _one(dsn, "SELECT term_end FROM ledger.license_terms WHERE license = %s",
                          site) == [(datetime(2027, 1, 1, tzinfo=UTC),)]

        # 1. `kubectl kameng renew` (no HQ page involved): 30 days, by hand
        #    1 200 000 fen × 30/365 = 98 630.14 → 98 630.
        out = plugin(devenv, "renew", site, "--extend", "30d")
        assert out.returncode == 0, out.stderr
        await w.housekeeping()
        key1 = f"renewal:{site}:2027-01-01T00:00:00Z:2027-01-31T00:00:00Z"
        assert await _invoices(dsn, site) == [(key1, 98630)]
        await w.housekeeping()  # seen again: nothing new
        assert len(await _invoices(dsn, site)) == 1

        # 2. A GitOps edit of spec.term.end while no worker runs; a fresh worker (a
        #    restart: empty memory) finds it from the ledger's mark and posts it once.
        #    10 days: 1 200 000 × 10/365 = 32 876.71 → 32 877.
        kubectl("patch", "license", site, "--type=merge",
                "-p", '{"spec":{"term":{"end":"2027-02-10T00:00:00Z"}}}')
        w2 = _worker(dsn, rp, LicenseBook(kube, ttl=0.0), name="two")
        await w2.housekeeping()
        await w2.housekeeping()
        w3 = _worker(dsn, rp, LicenseBook(kube, ttl=0.0), name="three")
        await w3.housekeeping()  # another restart: no re-post
        key2 = f"renewal:{site}:2027-01-31T00:00:00Z:2027-02-10T00:00:00Z"
        assert await _invoices(dsn, site) == [(key1, 98630), (key2, 32877)]

        # 3. HQ's page invoices first (same function, same key), then writes the
        #    License; the worker sees the end grow and posts nothing more.
        spec = json.loads(kubectl("get", "license", site, "-o", "json").stdout)["spec"]
        rates = Rates.from_fees(spec["fees"], license=site)
        before = Term(parse_time(spec["term"]["start"]), parse_time(spec["term"]["end"]))
        after = Term(before.start, parse_time("2027-03-12T00:00:00Z"))
        inv = invoices.renewal_invoice(site, site, rates, before, after)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn, \
                conn.transaction():
            assert await invoices.post_invoice(conn, inv, rates, datetime.now(UTC))
        kubectl("patch", "license", site, "--type=merge",
                "-p", '{"spec":{"term":{"end":"2027-03-12T00:00:00Z"}}}')
        await w3.housekeeping()
        key3 = f"renewal:{site}:2027-02-10T00:00:00Z:2027-03-12T00:00:00Z"
        assert await _invoices(dsn, site) == [(key1, 98630), (key2, 32877), (key3, 98630)]

        # 4. A term shortened and extended back (a GitOps revert, then the renewal put
        #    into Git) is not charged again for the same days.
        kubectl("patch", "license", site, "--type=merge",
                "-p", '{"spec":{"term":{"end":"2027-02-10T00:00:00Z"}}}')
        await w3.housekeeping()
        kubectl("patch", "license", site, "--type=merge",
                "-p", '{"spec":{"term":{"end":"2027-03-12T00:00:00Z"}}}')
        await w3.housekeeping()
        assert len(await _invoices(dsn, site)) == 3
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            assert await verify(conn, check_payments=False) == []
    finally:
        await kube.close()
        kubectl("delete", "subsite,license", site, "--wait=false", check=False)


async def test_fee_change_mid_period_is_pro_rated_to_the_fen(dsn, rp):  # noqa: F811
    await setup_ledger(dsn)
    client, prefix = rp
    site = "prorate"
    book = LicenseBook()
    w = _worker(dsn, rp, book)
    # October 2026 (31 days), monthly statements. Until 11 Oct 00:00: 12 000.00 a year and
    # 8 % on game-cards; from then on 18 000.00 a year and 10 %.
    v1 = license_obj(site, shares={"game-cards": "8"}, fee="12000.00")
    v2 = license_obj(site, shares={"game-cards": "10"}, fee="18000.00")
    v2["metadata"]["generation"] = 2
    book.set([v1])
    await w.track_licenses(now=datetime(2026, 9, 20, tzinfo=UTC))
    await client.xadd(prefix + site, event("order.paid", site, "A", 10000,
                                           ts=datetime(2026, 10, 5, 12, tzinfo=UTC)))
    await _drain(w)
    book.set([v2])
    changed = datetime(2026, 10, 11, tzinfo=UTC)
    await w.track_licenses(now=changed)
    await w.track_licenses(now=datetime(2026, 10, 12, tzinfo=UTC))  # seen again: no row
    assert len(await _one(dsn, "SELECT 1 FROM ledger.rate_changes WHERE site = %s", site)) == 2
    for oid, amt in (("B", 10000), ("C", 12345)):
        await client.xadd(prefix + site, event("order.paid", site, oid, amt,
                                               ts=datetime(2026, 10, 20, tzinfo=UTC)))
    # Sold on 8 Oct, posted only now (a backlog): the rate of its own time, 8 %.
    await client.xadd(prefix + site, event("order.paid", site, "D", 5000,
                                           ts=datetime(2026, 10, 8, tzinfo=UTC)))
    await _drain(w)
    await w.housekeeping(now=datetime(2026, 11, 1, tzinfo=UTC))
    (fig,) = (await _one(dsn, "SELECT figures FROM ledger.statements WHERE site = %s",
                         site))[0]
    # By hand, to the fen:
    #   base fee 1 Oct – 11 Oct: 1 200 000 / 12 × 10/31 = 32 258.06 → 32 258
    #   base fee 11 Oct – 1 Nov: 1 800 000 / 12 × 21/31 = 101 612.90 → 101 613
    #   shares: A 10 000 × 8 % = 800; B 10 000 × 10 % = 1 000; C 12 345 × 10 % = 1 234.5
    #     → 1 235; D (sold 8 Oct) 5 000 × 8 % = 400; total 3 435
    #   net = 37 345 − 3 435 − 133 871 = −99 961
    assert fig["base_fee_lines"] == [
        {"from": "2026-10-01T00:00:00+00:00", "amount": 32258, "base_annual_fee": 1200000},
        {"from": "2026-10-11T00:00:00+00:00", "amount": 101613, "base_annual_fee": 1800000}]
    assert fig["base_fee"] == 133871
    assert [(o["order_id"], o["share"]) for o in fig["orders"]] == [
        ("A", 800), ("B", 1000), ("C", 1235), ("D", 400)]
    assert fig["revenue_share"] == {"game-cards": 3435}
    assert fig["net_payable"] == -99961
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await verify(conn, check_payments=False) == []
    from kameng.ledger.statements import to_csv
    csv = to_csv(site, datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC),
                 fig, True)
    assert "base_fee:from 2026-10-01T00:00:00+00:00,322.58,annual,12000.00" in csv
    assert "base_fee:from 2026-10-11T00:00:00+00:00,1016.13,annual,18000.00" in csv


async def test_a_terminated_license_is_neither_renewed_nor_invoiced(
        dsn, rp, kubectl, kubeconfig, devenv):  # noqa: F811
    await setup_ledger(dsn)
    site = f"ended-{uuid.uuid4().hex[:6]}"
    lic = license_obj(site)
    lic["metadata"] = {"name": site}
    lic["spec"]["term"] = {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
    ss = yaml.safe_load((ROOT / "manifests/samples/subsite-demo.yaml").read_text())
    ss["metadata"]["name"] = site
    ss["spec"] |= {"licenseRef": site, "domain": f"{site}.example"}
    kubectl("apply", "-f", str(ROOT / "manifests/samples/rolepolicy-standard.yaml"))
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                  "items": [lic, ss]}))
    kube = Kube.from_environment(kubeconfig)
    try:
        w = _worker(dsn, rp, LicenseBook(kube, ttl=0.0))
        await w.housekeeping()
        # What the exit writes once the site was exported and reclaimed.
        kubectl("annotate", "license", site, "kameng.io/terminated-at=2026-11-30T00:00:00Z")
        out = plugin(devenv, "renew", site, "--extend", "30d")
        assert out.returncode == 1
        assert "was terminated 2026-11-30T00:00:00Z" in out.stderr
        assert _end(kubectl, site) == "2027-01-01T00:00:00Z"
        # A GitOps edit still lengthens the spec; no invoice for a site that is gone.
        kubectl("patch", "license", site, "--type=merge",
                "-p", '{"spec":{"term":{"end":"2028-01-01T00:00:00Z"}}}')
        await w.housekeeping()
        assert await _invoices(dsn, site) == []
    finally:
        await kube.close()
        kubectl("delete", "subsite,license", site, "--wait=false", check=False)
