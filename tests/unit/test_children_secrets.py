from __future__ import annotations

import base64

from kameng.api.subsite import SubSiteSpec
from kameng.children.context import SiteContext, SiteSecrets
from kameng.children.secrets import secrets

SPEC = SubSiteSpec.model_validate({"displayName": "D", "owner": {"name": "P",
                                   "email": "p@x.example"}, "licenseRef": "demo",
                                   "domain": "demo.shop.example"})
CREDS = SiteSecrets(db_dsn="postgresql://u:pw@h:1/d", redis_url="redis://u:pw@h:2/0",
                    session_secret="sess", data_key="k1:AAAA", hq_api_token="tok",
                    license_token="a.b.c")


def test_names_and_keys_match_the_contract() -> None:
    objs = {s["metadata"]["name"]: s for s in secrets(SiteContext(
        name="demo", uid="u", spec=SPEC, secrets=CREDS))}
    assert set(objs) == {"storefront-db", "storefront-redis", "storefront-keys", "license"}
    dec = {n: {k: base64.b64decode(v).decode() for k, v in o["data"].items()}
           for n, o in objs.items()}
    assert dec["storefront-db"] == {"dsn": CREDS.db_dsn}
    assert dec["storefront-redis"] == {"url": CREDS.redis_url}
    assert dec["storefront-keys"] == {"session-secret": "sess", "data-key": "k1:AAAA",
                                      "hq-api-token": "tok"}
    assert dec["license"] == {"token": "a.b.c"}
    assert all(o["type"] == "Opaque" and "stringData" not in o for o in objs.values())


def test_credentials_never_show_in_repr() -> None:
    assert "pw" not in repr(CREDS)
    assert "sess" not in repr(CREDS)
    ctx = SiteContext(name="demo", uid="u", spec=SPEC, secrets=CREDS)
    assert "pw@" not in repr(ctx)


def test_builders_write_exactly_the_contracts_secrets_and_keys() -> None:
    from kameng.contracts import pod

    objs = secrets(SiteContext(name="demo", uid="u", spec=SPEC, secrets=CREDS))
    assert [o["metadata"]["name"] for o in objs] == list(pod.SITE_SECRETS)
    for o in objs:
        assert set(o["data"]) == {k.key for k in pod.keys_of(o["metadata"]["name"])}
