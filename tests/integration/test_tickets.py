"""Support tickets on real HQ and shop (PostgreSQL, Redis): a partner opens a ticket with an
attachment in the back office, it lands in the right HQ team's queue, HQ answers, the
partner reads the thread; attachment limits hold on both sides; a site never reaches
another site's ticket; an SLA breach shows on HQ's metrics."""

from __future__ import annotations

import base64
import re

import httpx
import psycopg
import pytest

from kameng.contracts import hq_api
from tests.support.browser import browser_fixture  # noqa: F401 - the fixture
from tests.support.storefront import csrf_from, run_stack, staff_client, wait_for

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("tickets"),
                   hq_overrides={"kpi_seconds": 0.3}) as st:
        st.partner = staff_client(st.shop_url, st.members["site-admin"])  # type: ignore[attr-defined]
        st.hq = staff_client(st.hq_url, "admin@hq.local")  # type: ignore[attr-defined]
        yield st
        st.partner.close()  # type: ignore[attr-defined]
        st.hq.close()  # type: ignore[attr-defined]


def _open(st, category: str, subject: str, files=None, priority: str = "normal"):
    page = st.partner.get("/admin/tickets")
    assert page.status_code == 200, page.text[:300]
    return st.partner.post("/admin/tickets", data={
        "csrf": csrf_from(page.text), "category": category, "priority": priority,
        "subject": subject, "text": f"{subject}: details"}, files=files or [])


def test_ticket_goes_to_the_right_team_and_the_answer_comes_back(stack):
    r = _open(stack, "settlement", "Payout missing",
              files=[("attachments", ("receipt.png", PNG, "image/png"))])
    assert r.status_code == 303, r.text[:500]
    tid = int(re.search(r"/admin/tickets/(\d+)", r.headers["location"]).group(1))

    # HQ: in the finance team's queue (settlement → finance), not in another team's.
    finance = stack.hq.get("/admin/tickets?team=finance").text
    assert f'data-id="{tid}" data-team="finance"' in finance
    assert f'data-id="{tid}"' not in stack.hq.get("/admin/tickets?team=payments").text
    page = stack.hq.get(f"/admin/tickets/{tid}")
    assert "Payout missing" in page.text
    assert "receipt.png" in page.text
    aid = re.search(rf"/admin/tickets/{tid}/attachments/(\d+)", page.text).group(1)
    att = stack.hq.get(f"/admin/tickets/{tid}/attachments/{aid}")
    assert att.content == PNG
    assert att.headers["content-disposition"].startswith("attachment")
    assert att.headers["x-content-type-options"] == "nosniff"

    # HQ answers; the partner sees the answer in the thread and the ticket answered.
    r = stack.hq.post(f"/admin/tickets/{tid}/answer", data={
        "csrf": csrf_from(page.text), "text": "Paid again today, reference 42."})
    assert r.status_code == 303
    thread = stack.partner.get(f"/admin/tickets/{tid}")
    assert thread.status_code == 200
    assert "Paid again today, reference 42." in thread.text
    assert '<strong id="status">answered</strong>' in thread.text
    assert "admin@hq.local" in thread.text
    # The partner downloads its own attachment through its shop.
    own = stack.partner.get(f"/admin/tickets/{tid}/attachments/{aid}")
    assert own.content == PNG

    # The partner replies: the ticket is open again, the thread has three messages.
    r = stack.partner.post(f"/admin/tickets/{tid}/reply", data={
        "csrf": csrf_from(thread.text), "text": "Received, thanks."})
    assert r.status_code == 303
    view = stack.partner.get(f"/admin/tickets/{tid}").text
    assert view.count('class="message ') == 3
    assert '<strong id="status">open</strong>' in view


@pytest.mark.parametrize(("category", "team"), [
    ("payments", "payments"), ("fulfilment", "fulfilment"), ("technical", "platform"),
    ("account", "partner-success")])
def test_routing_table(stack, category, team):
    r = _open(stack, category, f"about {category}")
    tid = int(re.search(r"/admin/tickets/(\d+)", r.headers["location"]).group(1))
    assert f'data-id="{tid}" data-team="{team}"' in stack.hq.get(
        f"/admin/tickets?team={team}").text


@pytest.mark.parametrize(("name", "data", "ctype", "code"), [
    ("big.png", PNG + b"\x00" * (2 << 20), "image/png", "attachment_too_large"),
    ("script.png", b"<script>alert(1)</script>", "image/png", "attachment_type"),
    ("page.html", b"<html></html>", "text/html", "attachment_type"),
])
def test_attachment_limits_in_the_back_office(stack, name, data, ctype, code):
    with psycopg.connect(stack.hq_dsn) as conn:
        before = conn.execute("SELECT count(*) FROM tickets").fetchone()[0]
    r = _open(stack, "other", "with a bad file", files=[("attachments", (name, data, ctype))])
    assert r.status_code == 400
    with psycopg.connect(stack.hq_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM tickets").fetchone()[0] == before


def _api(stack, method: str, path: str, body=None) -> httpx.Response:
    return httpx.request(method, stack.hq_url + path, json=body, headers=stack.api_headers(),
                         timeout=30)


def test_hq_enforces_the_limits_itself(stack):
    # A hostile shop skips its own checks: HQ refuses what the contract refuses.
    body = {"category": "other", "subject": "x", "text": "y", "author": "a@b",
            "attachments": [{"filename": "x.png", "content_type": "image/png",
                             "data_b64": base64.b64encode(b"MZ\x90\x00").decode()}]}
    r = _api(stack, "POST", hq_api.TICKETS_PATH, body)
    assert r.status_code == 400
    assert r.json() == {"error": "attachment_type"}
    body["attachments"] = [{"filename": "x.exe", "content_type": "application/x-msdownload",
                            "data_b64": ""}] * 1
    assert _api(stack, "POST", hq_api.TICKETS_PATH, body).status_code == 400
    body["attachments"] = [{"filename": f"{i}.txt", "content_type": "text/plain",
                            "data_b64": base64.b64encode(b"hi").decode()} for i in range(4)]
    assert _api(stack, "POST", hq_api.TICKETS_PATH, body).status_code == 400
    # Without the site's token: nothing.
    r = httpx.get(stack.hq_url + hq_api.TICKETS_PATH, timeout=10)
    assert r.status_code in (401, 403)


def test_a_site_never_reaches_another_sites_ticket(stack):
    with psycopg.connect(stack.hq_dsn) as conn:
        other = conn.execute(
            "INSERT INTO tickets (site, category, priority, subject, team, due_at)"
            " VALUES ('someone-else', 'other', 'normal', 'secret of another site',"
            " 'partner-success', now() + interval '1 day') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO ticket_messages (ticket_id, side, author, body)"
                     " VALUES (%s, 'site', 'x@y', 'their text')", (other,))
    listing = _api(stack, "GET", hq_api.TICKETS_PATH).json()
    assert other not in [t["id"] for t in listing["tickets"]]
    assert _api(stack, "GET", hq_api.ticket_path(other)).status_code == 404
    r = _api(stack, "POST", hq_api.ticket_messages_path(other), {"text": "hi", "author": "a"})
    assert r.status_code == 404
    page = stack.partner.get(f"/admin/tickets/{other}")
    assert page.status_code == 404
    assert "secret of another site" not in page.text
    assert "secret of another site" not in stack.partner.get("/admin/tickets").text


def _metric(stack, name: str, labels: str) -> float | None:
    text = httpx.get(stack.hq_ops_url + "/metrics", timeout=10).text
    m = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_sla_breach_counts_until_hq_answers(stack):
    r = _open(stack, "payments", "Channel down", priority="urgent")
    tid = int(re.search(r"/admin/tickets/(\d+)", r.headers["location"]).group(1))
    labels = 'priority="urgent",team="payments"'
    assert wait_for(lambda: _metric(stack, "kameng_tickets_sla_breached", labels) == 0.0)
    # The urgent ticket's hour has passed without an answer (the deadline is moved, not
    # the clock: HQ compares with now()).
    with psycopg.connect(stack.hq_dsn) as conn:
        conn.execute("UPDATE tickets SET due_at = now() - interval '1 minute',"
                     " created_at = now() - interval '61 minutes' WHERE id = %s", (tid,))
    assert wait_for(lambda: _metric(stack, "kameng_tickets_sla_breached", labels) == 1.0)
    page = stack.hq.get(f"/admin/tickets/{tid}")
    assert 'id="breached"' in page.text
    stack.hq.post(f"/admin/tickets/{tid}/answer", data={"csrf": csrf_from(page.text),
                                                        "text": "Looking into it."})
    assert wait_for(lambda: _metric(stack, "kameng_tickets_sla_breached", labels) == 0.0)


def test_member_without_permission_is_refused(stack):
    viewer = staff_client(stack.shop_url, stack.members["viewer"])
    assert viewer.get("/admin/tickets").status_code == 403
    viewer.close()


def test_ticket_pages_render(stack, browser):
    r = _open(stack, "catalog", "Price of steam-100 looks wrong",
              files=[("attachments", ("note.txt", "价格 101.75 应为 99.00".encode(),
                                      "text/plain"))])
    tid = int(re.search(r"/admin/tickets/(\d+)", r.headers["location"]).group(1))
    page = stack.hq.get(f"/admin/tickets/{tid}")
    stack.hq.post(f"/admin/tickets/{tid}/answer", data={
        "csrf": csrf_from(page.text), "text": "Fixed in HQ's catalogue; the shop syncs it."})
    browser.login(stack.shop_url, stack.members["site-admin"], stack.password)
    browser.get(f"{stack.shop_url}/admin/tickets")
    assert browser.exists(f'tr.ticket[data-id="{tid}"]')
    shots = [browser.screenshot("tickets-01-partner-list")]
    browser.get(f"{stack.shop_url}/admin/tickets/{tid}")
    assert browser.exists(".message.hq")
    shots.append(browser.screenshot("tickets-02-partner-thread"))
    browser.get(f"{stack.shop_url}/admin/plan")
    shots.append(browser.screenshot("plans-02-partner-plan"))
    browser.login(stack.hq_url, "admin@hq.local", stack.password)
    browser.get(f"{stack.hq_url}/admin/tickets?team=catalog&lang=en")
    assert browser.exists(f'tr.ticket[data-id="{tid}"]')
    shots.append(browser.screenshot("tickets-03-hq-queue"))
    browser.get(f"{stack.hq_url}/admin/tickets/{tid}?lang=en")
    shots.append(browser.screenshot("tickets-04-hq-thread"))
    for path in shots:
        assert path.stat().st_size > 5_000, path


def test_open_tickets_per_site_are_capped(stack):
    from kameng_storefront.hq.tickets import MAX_OPEN_TICKETS

    with psycopg.connect(stack.hq_dsn) as conn:
        have = conn.execute("SELECT count(*) FROM tickets WHERE site = %s AND status = 'open'",
                            (stack.site,)).fetchone()[0]
        conn.execute(
            "INSERT INTO tickets (site, category, priority, subject, team, due_at)"
            " SELECT %s, 'other', 'low', 'filler', 'partner-success', now() + interval '3 days'"
            " FROM generate_series(1, %s)", (stack.site, max(MAX_OPEN_TICKETS - have, 0)))
    try:
        body = {"category": "other", "subject": "one more", "text": "x", "author": "a@b"}
        r = _api(stack, "POST", hq_api.TICKETS_PATH, body)
        assert r.status_code == 400
        assert r.json() == {"error": "too_many_open_tickets"}
        r = _open(stack, "other", "one more from the back office")
        assert r.status_code == 400
    finally:
        with psycopg.connect(stack.hq_dsn) as conn:
            conn.execute("DELETE FROM tickets WHERE subject = 'filler'")
    assert _api(stack, "POST", hq_api.TICKETS_PATH, body).status_code == 201
