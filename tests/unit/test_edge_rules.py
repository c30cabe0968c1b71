"""Single edges of the money and access rules that the larger tests pass by: a renewal
that adds no time costs nothing, a hold reaches the SubSite's verdict, and the
annotations the reconcile acts on keep their values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kameng.api.holds import Hold
from kameng.api.kinds import ROTATE_CREDENTIALS_ANNOTATION, SHOP_URL_ANNOTATION
from kameng.api.license import LicenseSpec
from kameng.controller.reconcile import acted_on_annotations
from kameng.licensing.term import Term, renewal_fee
from kameng.licensing.verdict import verdict_for

START = datetime(2030, 1, 1, tzinfo=UTC)
END = datetime(2031, 1, 1, tzinfo=UTC)
# One fen per second of a 365-day year: a second's error shows as a fen.
FEN_PER_SECOND = 365 * 86400


def test_a_renewal_that_adds_nothing_or_shortens_costs_nothing() -> None:
    before = Term(START, END)
    assert renewal_fee(FEN_PER_SECOND, before, Term(START, END)) == 0
    assert renewal_fee(FEN_PER_SECOND, before, Term(START, END - timedelta(days=1))) == 0
    assert renewal_fee(FEN_PER_SECOND, before, Term(START, END + timedelta(seconds=1))) == 1


def test_a_hold_reaches_the_subsites_verdict() -> None:
    spec = LicenseSpec.model_validate({
        "subSite": "demo", "plan": "basic", "categories": ["game"],
        "term": {"start": "2030-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"}})
    now = START + timedelta(days=1)
    assert verdict_for("demo", "demo", spec, 1, now).valid
    held = verdict_for("demo", "demo", spec, 1, now, (Hold("risk", "chargebacks"),))
    assert (held.valid, held.state, held.mode) == (False, "Suspended", "suspended")
    assert "chargebacks" in held.message


def test_acted_on_annotations_keep_their_values_and_drop_empty_ones() -> None:
    meta = {"annotations": {ROTATE_CREDENTIALS_ANNOTATION: "2030-01-01",
                            SHOP_URL_ANNOTATION: "", "other.io/x": "y"}}
    assert acted_on_annotations(meta) == {ROTATE_CREDENTIALS_ANNOTATION: "2030-01-01"}
    assert acted_on_annotations({}) == {}


def test_a_pending_password_change_comes_first_unless_the_route_allows_it(
        monkeypatch) -> None:
    import asyncio

    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    from kameng_storefront.web import auth
    from kameng_storefront.web.staff import Staff

    staff = Staff(email="li@example.com", role="owner", permissions=frozenset({"orders:read"}),
                  must_change_password=True)

    async def current_staff(request):  # the session lookup (Redis) is not this rule
        return staff

    async def handler(request, who):
        return PlainTextResponse("page")

    monkeypatch.setattr(auth, "current_staff", current_staff)
    request = Request({"type": "http", "method": "GET", "path": "/admin", "headers": []})
    page = asyncio.run(auth.requires("orders:read")(handler)(request))
    assert (page.status_code, page.headers["location"]) == (303, auth.PASSWORD_PATH)
    page = asyncio.run(auth.requires(pending_change_ok=True)(handler)(request))
    assert (page.status_code, page.body) == (200, b"page")


def test_the_signed_claims_carry_a_hold_and_a_termination_as_suspended() -> None:
    """The shop reads its token, not the verdict: a suspending hold and a termination
    must reach the token's claims, and a hold that only holds payouts must not."""
    spec = LicenseSpec.model_validate({
        "subSite": "demo", "plan": "basic", "categories": ["game"],
        "term": {"start": "2030-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"}})
    now = START + timedelta(days=1)
    free = verdict_for("demo", "demo", spec, 1, now)
    assert free.claims is not None
    assert not free.claims.suspended
    risk = verdict_for("demo", "demo", spec, 1, now, (Hold("risk", "fraud"),))
    assert risk.claims is not None
    assert risk.claims.suspended
    payout = verdict_for("demo", "demo", spec, 1, now, (Hold("payout", "audit"),))
    assert payout.claims is not None
    assert not payout.claims.suspended
    assert payout.valid
    ended = verdict_for("demo", "demo", spec, 1, now, terminated_at=now - timedelta(hours=1))
    assert ended.claims is not None
    assert ended.claims.suspended
    assert (ended.valid, ended.state) == (False, "Terminated")
