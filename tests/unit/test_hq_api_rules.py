"""The approval and ticket rules of the HQ ⇄ sub-site contract, one refusal at a time:
what a partner may ask HQ to change (and the patch it becomes), which attachments HQ's
staff can be made to open, and the paths both sides build."""

from __future__ import annotations

import re

import pytest

from kameng.contracts import hq_api
from kameng.contracts.hq_api import (
    MAX_ATTACHMENT_BYTES,
    attachment_refusal,
    change_patch,
    normalise_change,
)

DOMAIN_MSG = "domain must be a host name such as shop.example.com"
MARKUP_MSG = ('markupPercent must be a decimal string from "0" to "500" (a sale price is '
              "never below HQ cost)")
MEMBERS_MSG = "members must list 1 to 64 members"


def _refused(kind: str, change: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:  # noqa: PT011 - the message is asserted whole
        change_patch(kind, change)
    assert str(err.value) == message


def _member(i: int) -> dict:
    return {"name": f"m{i}", "email": f"m{i}@example.com", "role": "staff"}


# --- change_patch: each kind, its patch and its refusals --------------------------------

def test_an_unknown_kind_is_refused_naming_the_known_ones() -> None:
    _refused("finance:withdraw", {}, "unknown change 'finance:withdraw'; one of "
             "payments.methods, domain, catalog.priceRules, catalog.hiddenProducts, members")


def test_payment_methods_become_the_payments_patch() -> None:
    assert change_patch("payments.methods", {"methods": ["alipay", "sandbox"]}) == {
        "spec": {"payments": {"methods": ["alipay", "sandbox"]}}}
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's message (at least one)
        change_patch("payments.methods", {"methods": []})
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's message (unknown method)
        change_patch("payments.methods", {"methods": ["cash"]})


def test_a_domain_is_trimmed_lowercased_and_needs_a_dot() -> None:
    assert change_patch("domain", {"domain": "  Shop.Example.COM "}) == {
        "spec": {"domain": "shop.example.com"}}
    for bad in ("nodot", "", "-x.example.com", "shop..example.com", "shop_1.example.com"):
        _refused("domain", {"domain": bad}, DOMAIN_MSG)
    _refused("domain", {}, DOMAIN_MSG)


def test_a_domain_may_be_253_characters_not_254() -> None:
    longest = "a" * 249 + ".com"
    assert len(longest) == 253
    assert change_patch("domain", {"domain": longest}) == {"spec": {"domain": longest}}
    _refused("domain", {"domain": "a" + longest}, DOMAIN_MSG)


def test_price_rules_run_the_crds_markup_rule() -> None:
    rules = [{"category": "game", "markupPercent": "0"},
             {"category": "phone", "markupPercent": "500"},
             {"category": "video", "markupPercent": "7.5"}]
    assert change_patch("catalog.priceRules", {"priceRules": rules}) == {
        "spec": {"catalog": {"priceRules": rules}}}
    # Above 500 %, though the pattern matches; and what the pattern refuses (a negative
    # markup would sell below HQ cost, which float() alone would accept).
    for bad in ("500.01", "501", "-1", "1e2", "01", "abc"):
        _refused("catalog.priceRules",
                 {"priceRules": [{"category": "game", "markupPercent": bad}]}, MARKUP_MSG)


def test_hidden_products_become_the_catalog_patch_and_only_that() -> None:
    assert change_patch("catalog.hiddenProducts", {"hiddenProducts": ["g1", "g2"]}) == {
        "spec": {"catalog": {"hiddenProducts": ["g1", "g2"]}}}
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's message (SKU too long)
        change_patch("catalog.hiddenProducts", {"hiddenProducts": ["x" * 65]})


def test_members_are_the_whole_list_of_1_to_64() -> None:
    patch = change_patch("members", {"members": [
        {**_member(1), "kubernetesUser": "alice"}, _member(2)]})
    # exclude_none: a member without a Kubernetes user has no key at all (a merge patch
    # with null would remove fields the partner never touched).
    assert patch == {"spec": {"members": [
        {**_member(1), "kubernetesUser": "alice"}, _member(2)]}}
    many = [_member(i) for i in range(64)]
    assert change_patch("members", {"members": many}) == {"spec": {"members": many}}
    _refused("members", {"members": [*many, _member(64)]}, MEMBERS_MSG)
    _refused("members", {"members": []}, MEMBERS_MSG)
    _refused("members", {}, MEMBERS_MSG)
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's message (bad e-mail)
        change_patch("members", {"members": [{**_member(1), "email": "nope"}]})


# --- normalise_change: the stored form is the field's key and the SubSite's value --------

def test_each_kind_is_stored_under_its_own_key() -> None:
    assert normalise_change("payments.methods", {"methods": ["usdt"], "x": 1}) == {
        "methods": ["usdt"]}
    assert normalise_change("domain", {"domain": "A.Example.com"}) == {
        "domain": "a.example.com"}
    rules = [{"category": "game", "markupPercent": "15"}]
    assert normalise_change("catalog.priceRules", {"priceRules": rules}) == {
        "priceRules": rules}
    assert normalise_change("catalog.hiddenProducts", {"hiddenProducts": ["g1"]}) == {
        "hiddenProducts": ["g1"]}
    assert normalise_change("members", {"members": [_member(1)]}) == {
        "members": [_member(1)]}


def test_normalising_validates_like_the_patch() -> None:
    with pytest.raises(ValueError, match="^" + re.escape(DOMAIN_MSG) + "$"):
        normalise_change("domain", {"domain": "nodot"})


def test_a_nul_character_is_refused_before_postgresql_sees_it() -> None:
    with pytest.raises(ValueError) as err:  # noqa: PT011 - the message is asserted whole
        normalise_change("catalog.hiddenProducts", {"hiddenProducts": ["g\x001"]})
    assert str(err.value) == "NUL character"
    with pytest.raises(ValueError, match=r"^NUL character$"):  # a backslash, then a NUL
        normalise_change("catalog.hiddenProducts", {"hiddenProducts": ["\\\x00"]})
    # A backslash followed by the text "u0000" is no NUL: PostgreSQL stores it.
    assert normalise_change("catalog.hiddenProducts", {"hiddenProducts": ["\\u0000"]}) == {
        "hiddenProducts": ["\\u0000"]}
    assert normalise_change("catalog.hiddenProducts", {"hiddenProducts": ["g0"]}) == {
        "hiddenProducts": ["g0"]}


# --- attachment_refusal: size, type, and content that matches the type ------------------

PNG = b"\x89PNG\r\n\x1a\n"


def test_attachments_of_each_allowed_type_pass() -> None:
    assert attachment_refusal("image/png", PNG + b"data") is None
    assert attachment_refusal("image/jpeg", b"\xff\xd8\xff\xe0rest") is None
    assert attachment_refusal("application/pdf", b"%PDF-1.7\n") is None
    assert attachment_refusal("text/plain", "订单 42 未到账".encode()) is None


def test_the_size_limit_is_inclusive() -> None:
    assert MAX_ATTACHMENT_BYTES == 2 * 1024 * 1024
    assert attachment_refusal("text/plain", b"a" * MAX_ATTACHMENT_BYTES) is None
    assert attachment_refusal("text/plain", b"a" * (MAX_ATTACHMENT_BYTES + 1)) == (
        "attachment_too_large")
    # Size is checked first: an oversized file of a refused type is "too large".
    assert attachment_refusal("text/html", b"a" * (MAX_ATTACHMENT_BYTES + 1)) == (
        "attachment_too_large")


def test_types_outside_the_list_are_refused() -> None:
    for ctype in ("text/html", "image/svg+xml", "application/octet-stream", "TEXT/PLAIN",
                  "image/PNG", ""):
        assert attachment_refusal(ctype, b"hello") == "attachment_type"


def test_content_must_match_its_declared_type() -> None:
    assert attachment_refusal("image/png", b"<script>alert(1)</script>") == "attachment_type"
    assert attachment_refusal("image/png", PNG[:-1]) == "attachment_type"
    assert attachment_refusal("image/jpeg", PNG) == "attachment_type"
    assert attachment_refusal("application/pdf", b"PDF-1.7") == "attachment_type"


def test_text_must_be_utf8() -> None:
    assert attachment_refusal("text/plain", "订单".encode("gbk")) == "attachment_type"
    assert attachment_refusal("text/plain", b"\xff\xfe") == "attachment_type"
    # Binary types are not decoded: a PNG is not UTF-8 and still passes.
    assert attachment_refusal("image/png", PNG + b"\xff\xfe") is None


# --- paths -------------------------------------------------------------------------------

def test_paths_carry_every_id() -> None:
    assert hq_api.admin_decision_path("r-7", "approve") == (
        "/api/v1/admin/approvals/r-7/approve")
    assert hq_api.ticket_path(12) == "/api/v1/tickets/12"
    assert hq_api.ticket_messages_path("12") == "/api/v1/tickets/12/messages"
    assert hq_api.ticket_attachment_path(12, 3) == "/api/v1/tickets/12/attachments/3"
