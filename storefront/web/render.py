"""Shared web plumbing: templates, i18n, CSRF."""

from __future__ import annotations

import hmac
import json
import secrets
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from kameng.contracts.money import fen_to_str

from ..state import state_of

LOCALES = ("zh-CN", "en")


@cache
def _messages(locale: str) -> dict[str, str]:
    text = resources.files("kameng_storefront").joinpath(f"locales/{locale}.json").read_text(
        encoding="utf-8"
    )
    return json.loads(text)


def translator(locale: str):
    msgs = _messages(locale if locale in LOCALES else "zh-CN")
    return lambda key: msgs.get(key, key)


_env = Environment(
    loader=PackageLoader("kameng_storefront", "templates"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)
_env.filters["money"] = fen_to_str


def locale_of(request: Request) -> str:
    """``?lang=`` (remembered in the session) beats the site's configured locale."""
    lang = request.query_params.get("lang")
    if lang in LOCALES:
        request.session["lang"] = lang
    return request.session.get("lang") or state_of(request).settings.site.branding.locale


def csrf_token(request: Request) -> str:
    tok = request.session.get("csrf")
    if not tok:
        tok = secrets.token_urlsafe(24)
        request.session["csrf"] = tok
    return tok


def csrf_ok(request: Request, form: Any) -> bool:
    sent = str(form.get("csrf", ""))
    expected = request.session.get("csrf", "")
    # Bytes: compare_digest refuses non-ASCII str, and a form may carry anything.
    return bool(expected) and hmac.compare_digest(sent.encode(), str(expected).encode())


def render(request: Request, template: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    body = render_shared(request, template, locale_of(request), csrf=csrf_token(request), **ctx)
    return HTMLResponse(body, status_code=status_code)


def render_shared(request: Request, template: str, locale: str, **ctx: Any) -> str:
    """The page as every visitor with ``locale`` sees it: nothing of the visitor's own
    (no CSRF token, no session), so it may be cached and served to all of them."""
    state = state_of(request)
    return _env.get_template(template).render(
        request=request,
        t=translator(locale),
        locale=locale,
        other_locale="en" if locale == "zh-CN" else "zh-CN",
        site=state.settings.site,
        app_mode=state.settings.mode,
        shop_mode=state.effective_mode(),
        **ctx,
    )


def error_page(request: Request, status_code: int, message_key: str) -> HTMLResponse:
    return render(request, "error.html", status_code=status_code, message_key=message_key)
