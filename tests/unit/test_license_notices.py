"""Per-License lead times (ExpiringSoon, notices) and the notifiers' local implementation:
pure rules plus the spool, webhook and SMTP notifiers against real local servers."""

from __future__ import annotations

import asyncio
import base64
import json
import socketserver
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from kameng.api.license import LicenseSpec
from kameng.contracts.license_token import (
    evaluate_mode,
    generate_signing_key,
    sign_token,
    verify_token,
)
from kameng.licensing import notices
from kameng.licensing.lifecycle import Terms, state_at
from kameng.licensing.verdict import verdict_for
from kameng.notify import Notice, Notifiers, NotifyError
from kameng.notify.smtp import SmtpNotifier
from kameng.notify.spool import SpoolNotifier
from kameng.notify.webhook import WebhookNotifier

START = datetime(2030, 1, 1, tzinfo=UTC)
END = datetime(2031, 1, 1, tzinfo=UTC)
BASE = {"subSite": "demo", "plan": "basic", "categories": ["game-cards"],
        "term": {"start": "2030-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"}}
LEADS = ["720h", "168h", "24h"]


def terms(**spec: object) -> Terms:
    return Terms.from_spec(LicenseSpec.model_validate({**BASE, **spec}))


def test_expiring_soon_lead_comes_from_the_license():
    t = terms(expiringSoonBefore="168h")
    assert state_at(t, END - timedelta(days=8)).state == "Active"
    assert state_at(t, END - timedelta(days=8)).next_change == END - timedelta(days=7)
    assert state_at(t, END - timedelta(days=7)).state == "ExpiringSoon"
    # The default stays 30 days.
    assert state_at(terms(), END - timedelta(days=29)).state == "ExpiringSoon"


def test_the_token_carries_the_lead_so_every_side_agrees():
    """The shop and HQ read the life cycle from the token: the License's lead is in it."""
    key = generate_signing_key()
    spec = LicenseSpec.model_validate({**BASE, "expiringSoonBefore": "168h"})
    v = verdict_for("demo", "demo", spec, 1, END - timedelta(days=8))
    claims = verify_token(sign_token(v.claims, key), key.public_key())
    assert claims.warn_at == END - timedelta(days=7)
    for at in (END - timedelta(days=8), END - timedelta(days=7), END, END + timedelta(days=9)):
        assert state_at(Terms.from_claims(claims), at).state == \
            state_at(Terms.from_spec(spec), at).state
    assert evaluate_mode(claims, END + timedelta(hours=1)) == "readOnly"


def test_a_token_without_warn_at_keeps_its_bytes_and_the_default_lead():
    key = generate_signing_key()
    v = verdict_for("demo", "demo", LicenseSpec.model_validate(BASE), 1, START)
    old = v.claims.model_copy(update={"warn_at": None})
    token = sign_token(old, key)
    assert "warnAt" not in json.dumps(old.model_dump(mode="json", by_alias=True,
                                                     exclude_none=True))
    claims = verify_token(token, key.public_key())
    assert state_at(Terms.from_claims(claims), END - timedelta(days=29)).state == \
        "ExpiringSoon"


def test_each_notice_once_per_term_and_the_most_urgent_when_several_are_due():
    t, sent = terms(), []
    assert notices.due(t, LEADS, sent, END - timedelta(days=31)) is None
    assert notices.next_due(t, LEADS, sent, END - timedelta(days=31)) == END - timedelta(days=30)
    d = notices.due(t, LEADS, sent, END - timedelta(days=30))
    assert (d.before, d.passed) == ("720h", ("720h",))
    sent += notices.records(d.passed, t, END - timedelta(days=30))
    assert notices.due(t, LEADS, sent, END - timedelta(days=20)) is None
    assert notices.next_due(t, LEADS, sent, END - timedelta(days=20)) == END - timedelta(days=7)
    # Operator down from day 20 to the last 12 hours: one notice (24h), both settled.
    d = notices.due(t, LEADS, sent, END - timedelta(hours=12))
    assert (d.before, set(d.passed)) == ("24h", {"168h", "24h"})
    sent += notices.records(d.passed, t, END - timedelta(hours=12))
    assert notices.due(t, LEADS, sent, END - timedelta(hours=1)) is None
    assert notices.next_due(t, LEADS, sent, END - timedelta(hours=1)) is None
    # No notice after the end of the term or before its start.
    assert notices.due(t, ["24h"], [], END) is None
    assert notices.due(terms(term={"start": "2030-12-31T12:00:00Z",
                                   "end": "2031-01-01T00:00:00Z"}),
                       ["24h"], [], START) is None


def test_a_renewal_starts_a_new_list_of_notices():
    t = terms()
    sent = notices.records(LEADS, t, END - timedelta(hours=1))
    renewed = terms(term={"start": "2030-01-01T00:00:00Z", "end": "2032-01-01T00:00:00Z"})
    assert notices.sent_for_term(sent, renewed) == []
    d = notices.due(renewed, LEADS, sent, datetime(2031, 12, 3, tzinfo=UTC))
    assert d is not None
    assert d.before == "720h"


def _notice(**kw: object) -> Notice:
    base = dict(id="uid-1-168h", license="demo", site="demo", state="ExpiringSoon",
                before="168h", term_end="2031-01-01T00:00:00Z",
                grace_until="2031-01-04T00:00:00Z", left="7d", message="ends soon",
                recipients=("owner@partner.example",))
    return Notice(**{**base, **kw})  # type: ignore[arg-type]


def test_spool_writes_one_file_per_notice_id(tmp_path):
    n = SpoolNotifier(tmp_path / "spool")
    asyncio.run(n.send(_notice()))
    asyncio.run(n.send(_notice(message="again")))  # a resend replaces, never duplicates
    files = list((tmp_path / "spool").glob("*.json"))
    assert [f.name for f in files] == ["uid-1-168h.json"]
    assert json.loads(files[0].read_text())["message"] == "again"


class _Hook(BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[dict[str, str], dict[str, object]]]] = []
    status = 204

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).got.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hook():
    srv = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Hook.got, _Hook.status = [], 204
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    srv.shutdown()


def test_webhook_posts_json_with_the_token_and_an_idempotency_key(hook, caplog):
    async def token() -> str:
        return "s3cret-token"
    asyncio.run(WebhookNotifier(hook, token).send(_notice()))
    headers, body = _Hook.got[0]
    assert headers["Authorization"] == "Bearer s3cret-token"
    assert headers["Idempotency-Key"] == "uid-1-168h"
    assert body["before"] == "168h"
    assert body["site"] == "demo"
    # A refusal is an error naming the status, never the token.
    _Hook.status = 500

    async def both() -> None:
        await Notifiers([WebhookNotifier(hook, token)]).send(_notice())
    with pytest.raises(NotifyError) as exc:
        asyncio.run(both())
    assert "s3cret" not in str(exc.value)
    assert "s3cret" not in caplog.text


def test_hq_narrows_a_tokens_scope_to_the_published_one():
    from kameng.contracts.hq_auth import SiteCredential
    from kameng_storefront.hq.site_auth import within_published_scope
    key = generate_signing_key()
    v = verdict_for("demo", "demo", LicenseSpec.model_validate(
        {**BASE, "categories": ["game", "mobile"], "regions": ["CN-31", "CN-11"]}), 1, START)
    claims = verify_token(sign_token(v.claims, key), key.public_key())
    entry = SiteCredential(site="demo", sha256="0" * 64, createdAt="2030-01-01T00:00:00Z",
                           categories=["mobile"], regions=["CN-11"])
    narrowed = within_published_scope(claims, entry)
    assert not narrowed.allows("game", "CN-11")
    assert narrowed.allows("mobile", "CN-11")
    assert not narrowed.allows("mobile", "CN-31")
    # A scope added to the License counts once the token carries it too.
    wider = entry.model_copy(update={"categories": ["game", "mobile", "gift"]})
    assert not within_published_scope(claims, wider).allows("gift")
    unpublished = entry.model_copy(update={"categories": None, "regions": None})
    assert within_published_scope(claims, unpublished) == claims
    # An entry without a scope keeps the bytes it had before the fields existed.
    assert "categories" not in unpublished.to_json()


def test_risk_blocks_sales_when_the_license_does_not_sell():
    from kameng.workers.risk.worker import license_block
    t = terms(gracePeriod="72h")
    lic = {"terms": t}
    ms = lambda at: int(at.timestamp() * 1000)  # noqa: E731
    sale = {"event": "order.paid", "ts": ms(END - timedelta(days=1))}
    assert license_block(sale, lic) is None  # ExpiringSoon still sells
    grace = license_block({**sale, "ts": ms(END + timedelta(hours=1))}, lic)
    assert (grace.action, grace.rule) == ("block", "license-grace")
    expired = license_block({**sale, "ts": ms(END + timedelta(days=4))}, lic)
    assert expired.rule == "license-expired"
    # Money going back to buyers is never blocked; an unknown License decides nothing.
    assert license_block({"event": "order.refunded", "ts": ms(END + timedelta(days=4))},
                         lic) is None
    assert license_block(sale, None) is None


class _Smtp(socketserver.StreamRequestHandler):
    """A minimal SMTP server (a real TCP dialogue): records AUTH, recipients and data."""

    seen: ClassVar[list[dict[str, object]]] = []

    def handle(self) -> None:
        rec: dict[str, object] = {"rcpt": []}
        self.wfile.write(b"220 test ESMTP\r\n")
        while line := self.rfile.readline():
            cmd = line.decode().strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-test\r\n250 AUTH PLAIN\r\n")
            elif verb == "AUTH":
                rec["auth"] = base64.b64decode(cmd.split()[-1]).split(b"\0")
                self.wfile.write(b"235 ok\r\n")
            elif verb == "RCPT":
                rec["rcpt"].append(cmd.split(":", 1)[1].strip("<> "))  # type: ignore[union-attr]
                self.wfile.write(b"250 ok\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go\r\n")
                data = []
                while (d := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(d)
                rec["data"] = b"".join(data).decode()
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                break
            else:
                self.wfile.write(b"250 ok\r\n")
        type(self).seen.append(rec)


def test_smtp_sends_to_the_owner_extra_recipients_and_hq_with_the_secret_password():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Smtp.seen = []

    async def password() -> str:
        return "smtp-pw"
    try:
        n = SmtpNotifier("127.0.0.1", srv.server_address[1], "kameng@hq.example",
                         username="kameng", password=password, starttls=False,
                         always_to=("hq@hq.example",))
        asyncio.run(n.send(_notice(recipients=("owner@partner.example",))))
    finally:
        srv.shutdown()
        srv.server_close()
    rec = _Smtp.seen[0]
    assert rec["auth"] == [b"", b"kameng", b"smtp-pw"]
    assert sorted(rec["rcpt"]) == ["hq@hq.example", "owner@partner.example"]
    assert "Message-ID: <uid-1-168h@kameng>" in rec["data"]
    assert "ends in 7d" in rec["data"]

    # A server that is down: an error naming the server, never the password.
    with pytest.raises(NotifyError) as exc:
        asyncio.run(n.send(_notice()))
    assert "smtp-pw" not in str(exc.value)
