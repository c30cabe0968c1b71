"""The license at its edges: token wire format and every refusal, the scope (category and
region), the life-cycle boundaries, renewal at the exact end of a term and the SubSite's
verdict. Each assertion pins one thing a careless edit could break (`make mutation`)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from kameng.api.license import LicenseSpec
from kameng.contracts.license_token import (
    TOKEN_TYPE,
    LicenseClaims,
    TokenError,
    evaluate_mode,
    generate_signing_key,
    key_id,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_to_b64,
    public_key_to_pem,
    sign_token,
    verify_token,
)
from kameng.licensing.lifecycle import Terms, state_at
from kameng.licensing.term import Term, parse_duration, parse_time, renew
from kameng.licensing.verdict import claims_for, token_for, verdict_for

NOW = datetime(2026, 6, 1, tzinfo=UTC)
KEY = generate_signing_key()


def claims(**kw) -> LicenseClaims:
    base = dict(site="demo", plan="flagship", categories=["game", "mobile"],
                regions=["CN-31"], nbf=NOW - timedelta(days=1), exp=NOW + timedelta(days=60),
                graceUntil=NOW + timedelta(days=63), seq=3)
    base.update(kw)
    return LicenseClaims(**base)


def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


# --- token wire format --------------------------------------------------------------------


def test_token_is_compact_sorted_json_without_padding():
    tok = sign_token(claims(), KEY)
    h, p, s = tok.split(".")
    assert "=" not in tok
    assert unb64(h) == json.dumps({"alg": "EdDSA", "kid": key_id(KEY), "typ": TOKEN_TYPE},
                                  separators=(",", ":")).encode()
    body = unb64(p)
    assert body == json.dumps(json.loads(body), separators=(",", ":"), sort_keys=True).encode()
    wire = json.loads(body)
    assert wire == {"site": "demo", "plan": "flagship", "categories": ["game", "mobile"],
                    "regions": ["CN-31"], "nbf": int((NOW - timedelta(days=1)).timestamp()),
                    "exp": int((NOW + timedelta(days=60)).timestamp()),
                    "graceUntil": int((NOW + timedelta(days=63)).timestamp()),
                    "suspended": False, "seq": 3}
    KEY.public_key().verify(unb64(s), f"{h}.{p}".encode())  # signs exactly "h.p"


def test_key_id_is_16_hex_of_the_public_key():
    kid = key_id(KEY)
    assert kid == key_id(KEY.public_key())
    assert len(kid) == 16
    assert int(kid, 16) >= 0
    assert kid != key_id(generate_signing_key())


def test_public_key_forms():
    assert public_key_to_pem(KEY) == public_key_to_pem(KEY.public_key())
    assert public_key_to_b64(KEY) == public_key_to_b64(KEY.public_key())
    assert len(base64.b64decode(public_key_to_b64(KEY))) == 32
    pem = private_key_to_pem(KEY)
    assert key_id(load_private_key(pem)) == key_id(KEY)
    assert key_id(load_private_key(pem.decode())) == key_id(KEY)
    for form in (public_key_to_pem(KEY), public_key_to_pem(KEY).decode(),
                 " " + public_key_to_b64(KEY) + "\n", public_key_to_b64(KEY).encode()):
        assert key_id(load_public_key(form)) == key_id(KEY)


def _ec_pems() -> tuple[bytes, bytes]:
    ec = generate_private_key(SECP256R1())
    priv = ec.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = ec.public_key().public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


@pytest.mark.parametrize(("data", "message"), [
    ("", "public key is empty"),
    ("  \n", "public key is empty"),
    ("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----", "not a PEM public key"),
    ("ec-pub", "public key is not Ed25519"),
    ("not base64!", "public key is neither PEM nor base64"),
    ("QUJD\nREVG", "public key is neither PEM nor base64"),  # strict: no stray characters
    (base64.b64encode(b"x" * 31).decode(), "raw Ed25519 public key must be 32 bytes"),
])
def test_public_key_refusals_say_why(data, message):
    if data == "ec-pub":
        data = _ec_pems()[1]
    with pytest.raises(TokenError) as exc:
        load_public_key(data)
    assert str(exc.value) == message


def test_private_key_refusals_say_why():
    with pytest.raises(TokenError) as exc:
        load_private_key("garbage")
    assert str(exc.value) == "not a PEM Ed25519 private key"
    with pytest.raises(TokenError) as exc:
        load_private_key(_ec_pems()[0])
    assert str(exc.value) == "private key is not Ed25519"


def _forge(header: dict | None = None, body: bytes | None = None, key=KEY) -> str:
    h = b64(header if header is not None else
            {"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": key_id(key)})
    p = b64(body if body is not None else json.dumps(
        claims().model_dump(mode="json", by_alias=True)).encode())
    sig = key.sign(f"{h}.{p}".encode())
    return f"{h}.{p}.{b64(sig)}"


@pytest.mark.parametrize(("token", "message"), [
    (None, "license token is missing"),
    ("", "license token is missing"),
    ("x" * 16_385, "license token is too long"),
    ("a.b", "license token is malformed (expected 3 segments)"),
    ("a..c", "license token is malformed (expected 3 segments)"),
    ("a.b.c.d", "license token is malformed (expected 3 segments)"),
    ("!!!!.b.c", "license token header is not JSON"),
    ("bad-sig", "token segment is not base64url"),
    (b64(b"not json") + ".b.c", "license token header is not JSON"),
    (b64([1, 2]) + ".b.c", "license token algorithm is not EdDSA"),
    (b64({"alg": "none", "typ": TOKEN_TYPE}) + ".b.c", "license token algorithm is not EdDSA"),
    (b64({"alg": "EdDSA", "typ": "jwt"}) + ".b.c", "license token type is not " + TOKEN_TYPE),
    (b64({"alg": "EdDSA", "typ": TOKEN_TYPE, "kid": "0" * 16}) + ".b.c",
     "license token is signed by an unknown key"),
    (b64({"alg": "EdDSA", "typ": TOKEN_TYPE}) + ".b.c",
     "license token is signed by an unknown key"),
])
def test_token_refusals_say_why(token, message):
    if token == "bad-sig":
        token = sign_token(claims(), KEY).rsplit(".", 1)[0] + ".A"  # 1 char: cannot be base64
    with pytest.raises(TokenError) as exc:
        verify_token(token, KEY.public_key())
    assert str(exc.value) == message


def test_token_of_maximum_length_is_parsed_not_refused_as_too_long():
    with pytest.raises(TokenError) as exc:
        verify_token("x" * 16_384, KEY.public_key())
    assert str(exc.value) == "license token is malformed (expected 3 segments)"


def test_tampered_and_invalid_claims_refused():
    h, _, s = sign_token(claims(), KEY).split(".")
    with pytest.raises(TokenError) as exc:
        verify_token(f"{h}.{b64({'site': 'other'})}.{s}", KEY.public_key())
    assert str(exc.value) == "license token signature is invalid (tampered?)"
    with pytest.raises(TokenError) as exc:
        verify_token(_forge(body=b'{"site": ""}'), KEY.public_key())
    assert str(exc.value).startswith("license token claims are invalid: ")
    assert "errors" in str(exc.value)


def test_token_with_surrounding_whitespace_verifies_and_kid_selects_the_key():
    tok = sign_token(claims(), KEY)
    other = generate_signing_key()
    assert verify_token(f" {tok}\n", [other.public_key(), KEY.public_key()]) == claims()


# --- scope --------------------------------------------------------------------------------


@pytest.mark.parametrize(("category", "region", "allowed"), [
    ("game", None, True), ("game", "", True), ("game", "CN-31", True),
    ("game", "CN-11", False), ("gift", None, False), ("gift", "CN-31", False),
    ("mobile", "CN-31", True),
])
def test_scope_category_and_region(category, region, allowed):
    assert claims().allows(category, region) is allowed


# --- mode of a token over time ------------------------------------------------------------


def test_mode_boundaries_and_naive_times_are_utc():
    c = claims(nbf=datetime(2026, 1, 1), exp=datetime(2026, 7, 1),  # naive: UTC
               graceUntil=datetime(2026, 7, 4))
    end = datetime(2026, 7, 1, tzinfo=UTC)
    assert evaluate_mode(c, end - timedelta(seconds=1)) == "normal"
    assert evaluate_mode(c, end) == "readOnly"
    assert evaluate_mode(c, datetime(2026, 7, 4, tzinfo=UTC)) == "suspended"
    assert evaluate_mode(c, datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)) == "suspended"
    east = timezone(timedelta(hours=8))
    # 2026-07-01 07:59 in UTC+8 is still June 30 in UTC: the term has not ended.
    assert evaluate_mode(c, datetime(2026, 7, 1, 7, 59, tzinfo=east)) == "normal"
    assert evaluate_mode(claims(suspended=True), NOW) == "suspended"
    # Without a time: now (this license runs until 2026-08-01 from a 2026-06-01 NOW).
    live = claims(nbf=datetime.now(UTC) - timedelta(days=1),
                  exp=datetime.now(UTC) + timedelta(days=60),
                  graceUntil=datetime.now(UTC) + timedelta(days=61))
    assert evaluate_mode(live) == "normal"


def test_claims_times_in_another_zone_are_converted():
    east = timezone(timedelta(hours=8))
    c = claims(exp=datetime(2026, 7, 1, 8, tzinfo=east))  # = 2026-07-01T00:00Z
    assert json.loads(unb64(sign_token(c, KEY).split(".")[1]))["exp"] == int(
        datetime(2026, 7, 1, tzinfo=UTC).timestamp())
    assert c.model_dump(mode="json", by_alias=True)["graceUntil"] == int(
        (NOW + timedelta(days=63)).timestamp())
    naive = claims(exp=datetime(2026, 7, 1))
    assert naive.model_dump(mode="json")["exp"] == int(datetime(2026, 7, 1, tzinfo=UTC)
                                                       .timestamp())
    t = Terms.from_claims(claims(exp=datetime(2026, 7, 1, 8, tzinfo=east)))
    assert t.end == datetime(2026, 7, 1, tzinfo=UTC)
    assert t.end.tzinfo is UTC


# --- life cycle ---------------------------------------------------------------------------


def _terms(**kw) -> Terms:
    base = dict(site="demo", start=datetime(2026, 1, 1, tzinfo=UTC),
                end=datetime(2027, 1, 1, tzinfo=UTC), grace_until=datetime(2027, 1, 4, tzinfo=UTC))
    base.update(kw)
    return Terms(**base)


def test_suspension_message_with_and_without_reason():
    assert state_at(_terms(suspended=True), NOW).message == "suspended by HQ"
    lc = state_at(_terms(suspended=True, suspend_reason="risk"), NOW)
    assert lc.message == "suspended by HQ: risk"
    assert lc.state == "Suspended"
    assert lc.mode == "suspended"
    assert lc.selling is False


def test_naive_now_is_utc():
    t = _terms()
    assert state_at(t, datetime(2026, 12, 31, 23, 59, 59)).state == "ExpiringSoon"
    assert state_at(t, datetime(2027, 1, 1)).state == "Grace"


# --- term arithmetic ----------------------------------------------------------------------


def test_parse_time_is_aware_utc():
    for text in ("2027-01-01T00:00:00Z", "2027-01-01T08:00:00+08:00"):
        dt = parse_time(text)
        assert dt == datetime(2027, 1, 1, tzinfo=UTC)
        assert dt.tzinfo is UTC
    with pytest.raises(ValueError, match="time without a zone"):
        parse_time("2027-01-01T00:00:00")


def test_parse_duration_forms():
    assert parse_duration("1d12h30m5s") == timedelta(days=1, hours=12, minutes=30, seconds=5)
    assert parse_duration(" 72h ") == timedelta(hours=72)
    for bad in ("", "  ", "3w", "h"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_renewal_at_exactly_the_end_restarts_from_now():
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    year = timedelta(days=365)
    assert renew(Term(start, end), year, "FromNowIfExpired", end) == Term(end, end + year)
    before = end - timedelta(seconds=1)
    assert renew(Term(start, end), year, "FromNowIfExpired", before) == Term(start, end + year)
    assert renew(Term(start, end), year, "FromExpiry", end + year) == Term(start, end + year)
    with pytest.raises(ValueError,
                       match=r"^a renewal must extend the term by a positive duration$"):
        renew(Term(start, end), timedelta(0), "FromExpiry", end)
    with pytest.raises(ValueError, match="unknown renewal strategy 'Later'"):
        renew(Term(start, end), year, "Later", end)


# --- the SubSite's verdict ----------------------------------------------------------------


def _spec(**kw) -> LicenseSpec:
    base = {"subSite": "demo", "plan": "flagship", "categories": ["game"],
            "regions": ["CN-31"], "term": {"start": "2026-01-01T00:00:00Z",
                                           "end": "2027-01-01T00:00:00Z"},
            "gracePeriod": "72h", "fees": {"currency": "CNY", "baseAnnualFee": "0"}}
    base.update(kw)
    return LicenseSpec.model_validate(base)


def test_verdict_without_a_usable_license_is_invalid():
    v = verdict_for("demo", "lic", None, 1, NOW)
    assert v.valid is False
    assert (v.reason, v.message) == ("LicenseNotFound", "License 'lic' does not exist")
    v = verdict_for("demo", "lic", _spec(subSite="other"), 1, NOW)
    assert v.valid is False
    assert v.reason == "LicenseForOtherSite"
    assert v.message == "License 'lic' is for sub-site 'other', not 'demo'"
    assert token_for(v, KEY, None, NOW) == ""


def test_verdict_claims_carry_the_whole_license():
    v = verdict_for("demo", "lic", _spec(suspended=True), 7, NOW)
    assert v.claims == claims_for(Terms.from_spec(_spec(suspended=True)),
                                  _spec(suspended=True), 7)
    c = v.claims
    assert (c.site, c.plan, c.categories, c.regions, c.suspended, c.seq) == (
        "demo", "flagship", ["game"], ["CN-31"], True, 7)
    assert c.grace_until == datetime(2027, 1, 4, tzinfo=UTC)
    signed = verify_token(token_for(v, KEY, None, NOW), KEY.public_key())
    # The sequence is set at signing (it never goes backwards); everything else is c.
    assert signed.seq > c.seq
    assert signed.model_copy(update={"seq": c.seq}) == c
