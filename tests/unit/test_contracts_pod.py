"""The pod contract is one table; the storefront finds every entry where the operator
puts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kameng.contracts import pod
from kameng.contracts.siteconfig import SiteConfig
from kameng_storefront.config import load_settings, read_secret, secret_path


def test_every_env_var_and_file_is_unique() -> None:
    readable = [k for k in pod.SECRET_KEYS if k.env]
    assert len({k.env for k in readable}) == len(readable)
    assert len({k.relpath for k in pod.SECRET_KEYS}) == len(pod.SECRET_KEYS)
    assert all(k.path().startswith(pod.SECRETS_ROOT + "/") for k in pod.SECRET_KEYS)
    assert {k.secret for k in pod.SECRET_KEYS} == {*pod.SITE_SECRETS, pod.HQ_KEYS_SECRET}


@pytest.mark.parametrize("entry", [k for k in pod.SECRET_KEYS if k.env], ids=lambda k: k.env)
def test_storefront_reads_each_entry_from_its_mount(entry: pod.SecretKey, tmp_path: Path) -> None:
    env = {pod.SECRETS_ROOT_ENV: str(tmp_path)}
    assert secret_path(entry.env, env) == entry.path(str(tmp_path))
    Path(entry.path(str(tmp_path))).parent.mkdir(parents=True)
    Path(entry.path(str(tmp_path))).write_text("value\n")
    assert read_secret(entry.env, env) == "value"
    # The env var itself wins over the file.
    assert read_secret(entry.env, {**env, entry.env: "inline"}) == "inline"


@pytest.mark.parametrize("mode", ["hq", "subsite"])
def test_settings_resolve_from_the_contracts_mounts_alone(mode: str, tmp_path: Path) -> None:
    for entry in pod.SECRET_KEYS:
        if mode in entry.modes:
            Path(entry.path(str(tmp_path))).parent.mkdir(parents=True, exist_ok=True)
            Path(entry.path(str(tmp_path))).write_text(f"{entry.key}-value")
    cfg = tmp_path / "site.json"
    cfg.write_text(SiteConfig(site="demo").to_json())
    s = load_settings(mode, {pod.SECRETS_ROOT_ENV: str(tmp_path),  # type: ignore[arg-type]
                             pod.SITE_CONFIG_FILE_ENV: str(cfg)})
    assert s.database_url == "dsn-value"
    assert s.redis_url == "url-value"
    assert s.session_secret == "session-secret-value"
    assert s.data_keys == "data-key-value"
    # Only HQ's one account has a bootstrap password; sub-site members are invited.
    assert s.admin_password == ("admin-password-value" if mode == "hq" else None)
    if mode == "hq":
        assert (s.hq_master_secret, s.hq_public_key) == ("master-secret-value",
                                                        "public-key-value")
    else:
        assert s.hq_api_token == "hq-api-token-value"
        assert s.license_token_file == pod.LICENSE_TOKEN.path(str(tmp_path))
