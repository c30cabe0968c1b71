import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from kameng.contracts.license_token import (
    LicenseClaims,
    TokenError,
    evaluate_mode,
    generate_signing_key,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_to_b64,
    public_key_to_pem,
    sign_token,
    verify_token,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def claims(**kw):
    base = dict(
        site="demo", plan="basic", categories=["game"], regions=["CN-31"],
        nbf=NOW - timedelta(days=1), exp=NOW + timedelta(days=30),
        graceUntil=NOW + timedelta(days=33), seq=3,
    )
    base.update(kw)
    return LicenseClaims(**base)


def test_sign_verify_round_trip_with_all_key_forms():
    key = generate_signing_key()
    tok = sign_token(claims(), key)
    for pub in (key.public_key(), public_key_to_pem(key), public_key_to_b64(key)):
        got = verify_token(tok, pub, NOW)
        assert got == claims()
        assert got.seq == 3
        assert got.allows("game", "CN-31")
        assert not got.allows("mobile")


def test_pem_round_trip():
    key = generate_signing_key()
    again = load_private_key(private_key_to_pem(key))
    tok = sign_token(claims(), again)
    verify_token(tok, load_public_key(public_key_to_pem(key)))


def _tamper_payload(tok: str, **changes) -> str:
    h, p, s = tok.split(".")
    body = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    body.update(changes)
    p2 = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{h}.{p2}.{s}"


@pytest.mark.parametrize("mutate", [
    lambda t: _tamper_payload(t, suspended=False, categories=["game", "mobile"]),
    lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"),
    lambda t: t + ".x",
    lambda t: "",
    lambda t: None,
    lambda t: "a.b.c",
])
def test_tampered_or_missing_refused(mutate):
    key = generate_signing_key()
    tok = sign_token(claims(suspended=True), key)
    with pytest.raises(TokenError):
        verify_token(mutate(tok), key.public_key(), NOW)


def test_other_key_refused_and_rotation_accepted():
    k1, k2 = generate_signing_key(), generate_signing_key()
    tok = sign_token(claims(), k1)
    with pytest.raises(TokenError, match="unknown key"):
        verify_token(tok, k2.public_key())
    assert verify_token(tok, [k2.public_key(), k1.public_key()]).site == "demo"


def test_error_message_holds_no_token_material():
    key = generate_signing_key()
    tok = sign_token(claims(), key)
    bad = _tamper_payload(tok, site="evil")
    with pytest.raises(TokenError) as ei:
        verify_token(bad, key.public_key())
    assert bad.split(".")[1] not in str(ei.value)


def test_evaluate_mode_timeline():
    c = claims()
    assert evaluate_mode(c, NOW) == "normal"
    assert evaluate_mode(c, NOW - timedelta(days=2)) == "suspended"  # before nbf
    assert evaluate_mode(c, NOW + timedelta(days=31)) == "readOnly"  # in grace
    assert evaluate_mode(c, NOW + timedelta(days=34)) == "suspended"  # past grace
    assert evaluate_mode(claims(suspended=True), NOW) == "suspended"
