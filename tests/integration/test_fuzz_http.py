"""Every HTTP endpoint answers malformed input with a 4xx, never a 500.

On a real stack (HQ and a sub-site on PostgreSQL and Redis): the JSON APIs are fuzzed by
schemathesis from the OpenAPI description generated from the contracts
(:mod:`kameng.contracts.openapi`), every form (login, checkout, lookup, every back-office
POST of both modes) by hypothesis, plus odd header encodings and oversized bodies.
Bounded: a few dozen examples per operation, a couple of minutes in all.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from starlette.routing import Mount, Route

from kameng.contracts import openapi
from kameng_storefront.state import state_of
from tests.support.net import HTTP_TIMEOUT
from tests.support.storefront import (
    csrf_from,
    hq_add_product,
    hq_import_keys,
    run_stack,
    staff_client,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
schema = schemathesis.openapi.from_dict(openapi.document())
# CI budget; KAMENG_FUZZ_EXAMPLES=500 (and a random seed) for a deeper run by hand.
EXAMPLES = int(os.environ.get("KAMENG_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                derandomize=os.environ.get("KAMENG_FUZZ_EXAMPLES") is None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def stack(pg_admin_dsn, redis_url, tmp_path_factory):
    with run_stack(pg_admin_dsn, redis_url, tmp_path_factory.mktemp("fuzz")) as st_:
        hq = staff_client(st_.hq_url, "admin@hq.local")
        hq_add_product(hq, "qq-10", "game", "10.00", "9.00")
        hq_import_keys(hq, "qq-10", [f"K{i}" for i in range(3)])
        shop = httpx.Client(timeout=HTTP_TIMEOUT, base_url=st_.shop_url)
        wait_for(lambda: "qq-10" in shop.get("/").text)
        yield st_


def _base(stack, path: str) -> str:
    servers = openapi.document()["paths"][path]["servers"][0]["description"]
    return {"HQ": stack.hq_url, "a sub-site": stack.shop_url}.get(servers, stack.shop_ops_url)


def test_openapi_document_is_fresh():
    assert (ROOT / "docs" / "openapi.json").read_text() == openapi.render()


@schema.parametrize()
@FUZZ
def test_json_apis_never_answer_500(case, stack):
    state = state_of(stack.shop_app)
    headers = {"Authorization": f"Bearer {state.settings.hq_api_token}",
               "X-Kameng-Site": stack.site, "X-Kameng-License": stack.token_file.read_text()}
    # Authenticated, so the fuzzed bodies reach the handlers (unauthenticated ones stop at
    # 401, which the same run covers when hypothesis drops or mangles the headers).
    case.call_and_validate(base_url=_base(stack, case.path), headers=headers,
                           checks=[not_a_server_error], timeout=30)


def _post_routes(app, prefix: str = "") -> list[str]:
    out = []
    for r in app.routes:
        if isinstance(r, Mount):
            out += _post_routes(r, prefix + r.path)
        elif isinstance(r, Route) and "POST" in (r.methods or ()):
            out.append(prefix + r.path)
    return out


# Text with what breaks naive parsers: NULs, surrogates (encoded as errors), RTL marks,
# huge numbers, "%"-escapes and form syntax.
ODD = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "\x00", "%ff%fe", "a&b=c", "1e999", "-1", "99999999999999999999",
                     "NaN", "../../etc/passwd", "\u202e", "😀" * 30, "' OR 1=1 --", "0.001"]),
)
FIELDS = st.sampled_from(["csrf", "email", "password", "product", "contact", "order", "coupon",
                          "amount", "category", "markup_percent", "id", "name_zh", "name_en",
                          "face_value", "cost", "region", "title", "body", "contact_hash",
                          "member", "new_password", "lang", "unknown_field"])


def _fill(path: str, value: str) -> str:
    """``path`` with every ``{param}`` replaced by ``value``, percent-encoded."""
    return re.sub(r"\{[^}]+\}", lambda _: quote(value, safe="") or "x", path)


@pytest.mark.parametrize("mode", ["hq", "subsite"])
def test_forms_never_answer_500(stack, mode):
    """Every POST route of the mode, as the most powerful staff member, with a valid CSRF
    token and fuzzed fields (unknown ones too) and path parameters."""
    base = stack.hq_url if mode == "hq" else stack.shop_url
    app = stack.hq_app if mode == "hq" else stack.shop_app
    email = "admin@hq.local" if mode == "hq" else stack.members["owner"]
    client = staff_client(base, email)
    token = csrf_from(client.get("/admin").text)
    paths = [p for p in _post_routes(app) if p not in ("/admin/logout",)]
    assert len(paths) >= 4

    @settings(max_examples=EXAMPLES * 2, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(paths), fields=st.dictionaries(FIELDS, ODD, max_size=6),
           param=ODD, keep_csrf=st.booleans())
    def run(path, fields, param, keep_csrf):
        data = {**fields, **({"csrf": token} if keep_csrf else {})}
        r = client.post(_fill(path, param), data=data)
        assert r.status_code < 500, (path, data, r.status_code)

    run()
    # Still logged in and working: nothing the fuzzing sent broke the session or the app.
    assert client.get("/admin").status_code == 200


def test_odd_header_encodings_and_cookies(stack):
    raw = [(b"accept-language", b"\xff\xfe;q=\xff"),
           (b"cookie", b"kameng_subsite=\xff\xfebad; kameng_hq=\x80\""),
           (b"x-forwarded-for", b"\xff, ::::"), (b"content-type", b"multipart/form-data")]
    for base in (stack.shop_url, stack.hq_url):
        for path, method in (("/", "GET"), ("/lookup", "POST"), ("/admin/login", "POST"),
                             ("/api/v1/fulfil", "POST"), ("/api/payments/notify", "POST")):
            for name, value in raw:
                r = httpx.request(method, f"{base}{path}", headers=[(name, value)],
                                  content=b"\xff\xfe--x\r\n")
                assert r.status_code < 500, (base, path, name, r.status_code)


def test_odd_paths_and_queries(stack):
    state = state_of(stack.shop_app)
    api = {"Authorization": f"Bearer {state.settings.hq_api_token}", "X-Kameng-Site": stack.site,
           "X-Kameng-License": stack.token_file.read_text()}
    odd = ["%00", "%ff%fe", "%ed%a0%80", "a%00b", "..%2f..%2f", "%25", "x" * 5000]
    for o in odd:
        for method, url in (("GET", f"{stack.shop_url}/p/{o}"),
                            ("GET", f"{stack.shop_url}/order/{o}"),
                            ("GET", f"{stack.shop_url}/lookup?order={o}"),
                            ("GET", f"{stack.shop_url}/?lang={o}"),
                            ("GET", f"{stack.hq_url}/pay/{o}"),
                            ("POST", f"{stack.hq_url}/api/v1/payments/{o}/refund")):
            r = httpx.request(method, url, headers=api)
            assert r.status_code < 500, (url, r.status_code)


def test_json_api_rejects_bad_json_and_unknown_types(stack):
    state = state_of(stack.shop_app)
    headers = {"Authorization": f"Bearer {state.settings.hq_api_token}",
               "X-Kameng-Site": stack.site, "X-Kameng-License": stack.token_file.read_text(),
               "Content-Type": "application/json"}
    for body in (b"{", b"[]", b"null", b'"x"', b'{"order_id": {"a": 1}, "product_id": []}',
                 b"\xff\xfe", json.dumps({"order_id": "o", "product_id": "p", "x": 1}).encode(),
                 # What no column holds: found by schemathesis as 500s.
                 json.dumps({"order_id": "o", "amount": 10**30, "notify_url": "https://a.example",
                             "return_url": "https://a.example", "product_id": "p"}).encode(),
                 json.dumps({"order_id": "o\x00", "amount": 1, "product_id": "p\x00",
                             "notify_url": "https://a.example",
                             "return_url": "https://a.example"}).encode()):
        for path in ("/api/v1/fulfil", "/api/v1/payments"):
            r = httpx.post(f"{stack.hq_url}{path}", headers=headers, content=body)
            assert 400 <= r.status_code < 500, (path, body, r.status_code)


def test_oversized_bodies_get_413(stack):
    big = b"x" * (2 << 20)  # over the 1 MiB default

    def chunks():
        for _ in range(64):
            yield b"y" * (64 << 10)  # 4 MiB, streamed without a Content-Length

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    js = {"Content-Type": "application/json"}
    token = state_of(stack.shop_app).settings.hq_api_token
    api = {**js, "Authorization": f"Bearer {token}", "X-Kameng-Site": stack.site,
           "X-Kameng-License": stack.token_file.read_text()}
    for url, headers in ((f"{stack.shop_url}/lookup", form), (f"{stack.shop_url}/checkout", form),
                         (f"{stack.hq_url}/admin/login", form),
                         (f"{stack.hq_url}/api/v1/fulfil", api),
                         (f"{stack.shop_url}/api/payments/notify", js)):
        # Announced: refused before a byte is read.
        assert httpx.post(url, content=big, headers=headers).status_code == 413, url
        # Streamed: refused once the limit is passed, never buffered whole.
        assert httpx.post(url, content=chunks(), headers=headers).status_code == 413, url
    # Staff uploads (card-key CSV files) have their larger limit, and still one.
    huge = b"z" * (17 << 20)
    assert httpx.post(f"{stack.hq_url}/admin/keys", content=huge).status_code == 413
    # The shop still serves afterwards.
    assert httpx.get(f"{stack.shop_url}/").status_code == 200
