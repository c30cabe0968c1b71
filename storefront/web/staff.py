"""Staff identities: who is logged in (database sessions), with which permissions, and
every way a credential changes (invitation, self-service change, a manager's reset).

Sub-site roles and permissions come from the site config (the operator's RolePolicy), so
a role change takes effect on the next request; the database holds each member's own
password hash, the live sessions and the redeemed invitations.

Sessions: the signed cookie carries only a random session id; the row in
``staff_sessions`` (keyed by the id's SHA-256) is looked up on every request. Logout
deletes the row, a password change or reset deletes all of the member's rows, so a copied
cookie is worthless afterwards. Sessions end after :data:`SESSION_TTL` at the latest.

HQ has one account, ``admin@hq.local``, bootstrapped from HQ's own Secret
(``KAMENG_ADMIN_PASSWORD``); it must choose its own password at first login
(``must_change_password``) before any other page opens. Sub-site members have no
bootstrap password at all: each gets an invitation (:mod:`kameng.contracts.invitation`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from starlette.requests import Request

from kameng.api.permissions import HQ_PERMISSIONS
from kameng.contracts import invitation
from kameng.contracts.siteconfig import PERMISSIONS, Member

from ..crypto import hash_password, verify_password
from ..state import AppState, state_of

HQ_ADMIN_EMAIL = "admin@hq.local"
SESSION_KEY = "sid"
SESSION_TTL = timedelta(hours=12)
PASSWORD_MIN = 12
# argon2 hashes whatever it gets; a bound keeps one request from costing seconds.
PASSWORD_MAX = 256


@dataclass(frozen=True)
class Staff:
    email: str
    role: str
    permissions: frozenset[str]
    name: str = ""
    must_change_password: bool = False


def _now() -> datetime:
    # The app's clock, never the database's: invitation times (``iat``) come from app-side
    # clocks, and "issued after the last change" must compare like with like.
    return datetime.now(UTC)


def _hash_sid(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def member_of(state: AppState, email: str) -> Member | None:
    """The site-config member with ``email`` (case-insensitive); HQ has none."""
    email = email.strip().lower()
    return next((m for m in state.settings.site.members if m.email.lower() == email), None)


def _identity(state: AppState, email: str) -> tuple[str, str, frozenset[str]] | None:
    """(name, role, permissions) of a current account, ``None`` if it is not one (any
    more): a member removed from the config loses access on the next request."""
    if state.settings.mode == "hq":
        # HQ's one account also holds HQ's own permissions (risk review, …).
        return (("admin", "hq-admin", frozenset(PERMISSIONS) | frozenset(HQ_PERMISSIONS))
                if email == HQ_ADMIN_EMAIL else None)
    m = member_of(state, email)
    if m is None:
        return None
    return m.name, m.role, state.settings.site.permissions_for(m.role)


async def current_staff(request: Request) -> Staff | None:
    """The logged-in staff member of this request, checked against the database."""
    cached = getattr(request.state, "staff", False)
    if cached is not False:
        return cached
    staff = await _lookup(request)
    request.state.staff = staff
    return staff


async def _lookup(request: Request) -> Staff | None:
    account = await _session_account(request)
    if account is None:
        return None
    return staff_for(state_of(request), *account)


async def _session_account(request: Request) -> tuple[str, bool] | None:
    """(e-mail, must change password) of the live database session named by the
    cookie's session id, ``None`` without one."""
    sid = request.session.get(SESSION_KEY)
    if not isinstance(sid, str) or not sid:
        return None
    async with state_of(request).pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT s.email, st.must_change_password FROM staff_sessions s"
            " JOIN staff st ON st.email = s.email WHERE s.id_hash = %s AND s.expires_at > %s",
            (_hash_sid(sid), _now()),
        )).fetchone()
    return None if row is None else (row["email"], row["must_change_password"])


def staff_for(state: AppState, email: str, must_change_password: bool = False) -> Staff | None:
    """The account ``email`` as it is now: role and permissions from the site config."""
    ident = _identity(state, email)
    if ident is None:
        return None
    name, role, perms = ident
    return Staff(email, role, perms, name, must_change_password)


@dataclass(frozen=True)
class SessionKind:
    """Where one kind of database session lives: staff and shop customers share the
    mechanism (random id in the signed cookie, its SHA-256 in ``table``), not the table
    or the cookie key, so one never stands for the other."""

    table: str
    owner_column: str
    cookie_key: str
    ttl: timedelta
    # Cookie entries that survive a login or logout (everything else, the CSRF token
    # included, is dropped, so nothing planted before login is carried into the session).
    # ``None``: the session shares the cookie with others (a shop customer beside a staff
    # member in one browser), so only this kind's key and the CSRF token change.
    keep: tuple[str, ...] | None = ("lang",)


STAFF_SESSIONS = SessionKind("staff_sessions", "email", SESSION_KEY, SESSION_TTL)


def session_id(request: Request, kind: SessionKind) -> str | None:
    """The session id hash the cookie names for ``kind``, ``None`` without one."""
    sid = request.session.get(kind.cookie_key)
    return _hash_sid(sid) if isinstance(sid, str) and sid else None


async def open_session(request: Request, kind: SessionKind, owner: Any) -> None:
    """A new server-side session of ``kind`` for ``owner``; the cookie keeps only
    ``kind.keep``."""
    state = state_of(request)
    sid = secrets.token_urlsafe(32)
    now = _now()
    table, col = sql.Identifier(kind.table), sql.Identifier(kind.owner_column)
    async with state.pool.connection() as conn:
        # Bounded table: expired rows go whenever someone logs in.
        await conn.execute(sql.SQL("DELETE FROM {} WHERE expires_at <= %s").format(table), (now,))
        old = session_id(request, kind)
        if old:
            await conn.execute(sql.SQL("DELETE FROM {} WHERE id_hash = %s").format(table), (old,))
        await conn.execute(
            sql.SQL("INSERT INTO {} (id_hash, {}, expires_at) VALUES (%s, %s, %s)").format(
                table, col),
            (_hash_sid(sid), owner, now + kind.ttl),
        )
    _drop(request, kind)
    request.session[kind.cookie_key] = sid


async def close_session(request: Request, kind: SessionKind) -> None:
    """End the cookie's session of ``kind`` (the row goes, so a copied cookie is dead)."""
    old = session_id(request, kind)
    if old:
        async with state_of(request).pool.connection() as conn:
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE id_hash = %s").format(sql.Identifier(kind.table)),
                (old,))
    _drop(request, kind)


def _drop(request: Request, kind: SessionKind) -> None:
    if kind.keep is None:
        request.session.pop(kind.cookie_key, None)
        request.session.pop("csrf", None)  # a fresh token after every change of identity
        return
    kept = {k: request.session[k] for k in kind.keep if k in request.session}
    request.session.clear()
    request.session.update(kept)


async def start_session(request: Request, email: str) -> None:
    """A new server-side session for ``email``; the cookie's old content (a pre-login
    CSRF token, an older session id) is not carried over, except the language."""
    await open_session(request, STAFF_SESSIONS, email)
    request.state.staff = False  # recomputed on next use


async def end_session(request: Request) -> None:
    await close_session(request, STAFF_SESSIONS)


async def bootstrap_staff(state: AppState) -> None:
    """Make the staff table match the accounts that exist: HQ's admin (with its bootstrap
    password, to be changed at first login, where none is set yet) or the config's
    members (without any password: each is invited). Accounts of removed members are
    deleted with their sessions, so a re-added address needs a new invitation."""
    settings = state.settings
    async with state.pool.connection() as conn:
        if settings.mode == "hq":
            pw_hash = hash_password(settings.admin_password) if settings.admin_password else None
            await conn.execute(
                "INSERT INTO staff (email, name, password_hash, must_change_password)"
                " VALUES (%s, 'admin', %s, %s) ON CONFLICT (email) DO UPDATE SET"
                " must_change_password = staff.must_change_password"
                "  OR (staff.password_hash IS NULL AND EXCLUDED.password_hash IS NOT NULL),"
                " password_hash = COALESCE(staff.password_hash, EXCLUDED.password_hash)",
                (HQ_ADMIN_EMAIL, pw_hash, pw_hash is not None),
            )
            return
        people = {m.email.lower(): m.name for m in settings.site.members}
        await conn.execute("DELETE FROM staff WHERE NOT (email = ANY(%s))", (list(people),))
        for email, name in people.items():
            await conn.execute(
                "INSERT INTO staff (email, name) VALUES (%s, %s)"
                " ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name",
                (email, name),
            )


async def password_hash(state: AppState, email: str) -> str | None:
    """The stored hash of ``email`` (case-insensitive), ``None`` if unknown or unset."""
    async with state.pool.connection() as conn:
        row = await (
            await conn.execute("SELECT password_hash FROM staff WHERE lower(email) = %s", (email,))
        ).fetchone()
    return row["password_hash"] if row else None


def password_problem(password: str, email: str) -> str | None:
    """Locale key of what is wrong with a new password, ``None`` if it is acceptable."""
    if len(password) < PASSWORD_MIN:
        return "password_too_short"
    if len(password) > PASSWORD_MAX:
        return "password_too_long"
    lowered = password.lower()
    if len(set(password)) < 4 or lowered == email.lower() or lowered in email.lower():
        return "password_too_weak"
    return None


async def _store_password(conn: AsyncConnection[Any], email: str, password: str) -> None:
    """New hash, credential changed now (older invitations die), every session ends."""
    await conn.execute(
        "UPDATE staff SET password_hash = %s, credential_changed_at = %s,"
        " must_change_password = false WHERE email = %s",
        (hash_password(password), _now(), email),
    )
    await conn.execute("DELETE FROM staff_sessions WHERE email = %s", (email,))


async def change_password(state: AppState, staff: Staff, current: str, new: str,
                          confirm: str) -> str | None:
    """Self-service change. Returns a locale key of the problem, ``None`` on success
    (then every session of the member, this one included, has ended)."""
    if new != confirm:
        return "password_mismatch"
    if not verify_password(await password_hash(state, staff.email), current):
        return "password_wrong"
    if new == current:
        return "password_unchanged"
    problem = password_problem(new, staff.email)
    if problem:
        return problem
    async with state.pool.connection() as conn, conn.transaction():
        await _store_password(conn, staff.email, new)
    return None


# --- invitations ------------------------------------------------------------------------

class InvitationRefused(Exception):
    """An invitation that cannot be used; ``key`` is the locale key shown to the person."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _key(state: AppState) -> bytes:
    return invitation.invitation_key(state.settings.session_secret)


def check_invitation(state: AppState, token: str) -> tuple[invitation.InvitationClaims, Member]:
    """Signature, expiry, site, and that the member is in the site config with that
    e-mail. Raises :class:`InvitationRefused`."""
    if state.settings.mode != "subsite":
        raise InvitationRefused("invitation_invalid")
    try:
        claims = invitation.verify(token, _key(state), state.site)
    except invitation.InvitationError as e:
        raise InvitationRefused(
            "invitation_expired" if e.reason == "expired" else "invitation_invalid"
        ) from None
    member = member_of(state, claims.email)
    if member is None or member.name != claims.member:
        raise InvitationRefused("invitation_invalid")
    return claims, member


_CHANGED_AT = "SELECT credential_changed_at FROM staff WHERE email = %s"
_CHANGED_AT_FOR_UPDATE = _CHANGED_AT + " FOR UPDATE"


async def _usable(conn: AsyncConnection[Any], claims: invitation.InvitationClaims,
                  email: str, lock: bool) -> None:
    """The database half of the checks: the account exists, its credential did not change
    after the invitation was issued, and the nonce was never used."""
    query = (_CHANGED_AT_FOR_UPDATE if lock else _CHANGED_AT)
    row = await (await conn.execute(query, (email,))).fetchone()
    if row is None:
        raise InvitationRefused("invitation_invalid")
    used = await (await conn.execute(
        "SELECT 1 FROM used_invitations WHERE nonce = %s", (claims.nonce,)
    )).fetchone()
    if used:  # said first: it is the more helpful of the two for a used link
        raise InvitationRefused("invitation_used")
    changed = row["credential_changed_at"]
    if changed is not None and changed.timestamp() > claims.iat:
        raise InvitationRefused("invitation_superseded")


async def inspect_invitation(state: AppState, token: str) -> Member:
    """The invited member if ``token`` is usable right now (nothing is consumed)."""
    claims, member = check_invitation(state, token)
    async with state.pool.connection() as conn:
        await _usable(conn, claims, member.email.lower(), lock=False)
    return member


async def redeem_invitation(state: AppState, token: str, password: str, confirm: str) -> str:
    """Set the invited member's password and return their e-mail; raises
    :class:`InvitationRefused` (the invitation is not consumed then)."""
    claims, member = check_invitation(state, token)
    email = member.email.lower()
    if password != confirm:
        raise InvitationRefused("password_mismatch")
    problem = password_problem(password, email)
    if problem:
        raise InvitationRefused(problem)
    async with state.pool.connection() as conn, conn.transaction():
        # The row lock orders two redemptions of one member; the nonce's primary key
        # makes a second use of one token fail even so.
        await _usable(conn, claims, email, lock=True)
        # The nonce table stays small: a nonce older than the longest life of an
        # invitation can never be presented again with a valid expiry.
        await conn.execute(
            "DELETE FROM used_invitations WHERE used_at < %s",
            (_now() - timedelta(seconds=invitation.MAX_TTL_SECONDS + 86400),),
        )
        cur = await conn.execute(
            "INSERT INTO used_invitations (nonce, email) VALUES (%s, %s)"
            " ON CONFLICT (nonce) DO NOTHING", (claims.nonce, email),
        )
        if cur.rowcount != 1:
            raise InvitationRefused("invitation_used")
        await _store_password(conn, email, password)
    return email


# --- acting on another member (members:manage) -------------------------------------------

def manage_refusal(actor: Staff, target_email: str,
                   target_permissions: frozenset[str]) -> str | None:
    """Why ``actor`` may not act on the account ``target_email`` (a locale key), ``None``
    if they may. Nobody raises their own rights through another account: the target's
    permissions must be a subset of the actor's, and one's own account is changed only
    through the self-service page (which asks for the current password)."""
    if target_email.lower() == actor.email.lower():
        return "manage_self_refused"
    if not target_permissions <= actor.permissions:
        return "manage_wider_refused"
    return None


async def reset_member(state: AppState, email: str, ttl_seconds: float) -> str:
    """End the member's sessions, remove their password and return a fresh invitation
    token (issued after the reset, so it is the only one that works)."""
    member = member_of(state, email)
    if member is None:
        raise LookupError(email)
    changed = _now()
    async with state.pool.connection() as conn, conn.transaction():
        await conn.execute(
            "UPDATE staff SET password_hash = NULL, credential_changed_at = %s"
            " WHERE email = %s", (changed, member.email.lower()),
        )
        await conn.execute("DELETE FROM staff_sessions WHERE email = %s", (member.email.lower(),))
    # iat strictly after the change: the check is "changed > iat" in milliseconds.
    issued = max(time.time(), changed.timestamp() + 0.001)
    return invitation.issue(state.settings.session_secret, state.site, member.name,
                            member.email, ttl_seconds=ttl_seconds, now=issued)


async def member_overview(state: AppState) -> dict[str, dict[str, Any]]:
    """Per member e-mail: whether a password is set and how many sessions are live."""
    async with state.pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT st.email, st.password_hash IS NOT NULL AS has_password,"
            " count(s.id_hash) FILTER (WHERE s.expires_at > %s) AS sessions"
            " FROM staff st LEFT JOIN staff_sessions s ON s.email = st.email GROUP BY st.email",
            (_now(),),
        )).fetchall()
    return {r["email"]: r for r in rows}
