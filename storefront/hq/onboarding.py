"""Partner onboarding at HQ: the public application, the reviewers' queue, and approval
that creates the partner's License and SubSite through the Kubernetes API (HQ's own
ServiceAccount, ClusterRole ``kameng-hq-onboarding``: create/get on licenses and subsites)
or, in GitOps mode, hands out the YAML bundle to commit instead. The partner follows the
application on a private status page and finds the invitation to their back office there
once the shop is Ready.

SQL, rules and Kubernetes calls are here; the routes at the bottom only translate.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import logging
import re
import secrets
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kameng.api.common import API_VERSION, CATEGORY_RE, EMAIL_RE, REGION_RE
from kameng.api.conditions import READY
from kameng.api.kinds import ONBOARDING_APPLICATION_LABEL
from kameng.api.license import Plan
from kameng.api.names import site_name_refusal
from kameng.api.subsite import SubSiteSpec
from kameng.contracts import invitation, pod
from kameng.kube.client import Kube, KubeError, path_for

from ..state import AppState, state_of
from ..web.auth import requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff
from ..web.throttle import client_subject

log = logging.getLogger("kameng.storefront.hq.onboarding")

PLANS: tuple[str, ...] = Plan.__args__  # type: ignore[attr-defined]
DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
# Image and document types are recognised by their first bytes, never by the name or the
# Content-Type the browser sent (both are the applicant's to choose).
LOGO_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
DOC_TYPES = {**LOGO_TYPES, b"%PDF-": "application/pdf"}
MAX_LOGO_BYTES = 200 * 1024
MAX_DOCS = 3
# Within the app's request body limit (1 MiB by default) with the logo and the form.
MAX_DOCS_BYTES = 700 * 1024
MAX_LIST = 16
# The new License's term and fees until HQ edits it (a person reviews every application).
TERM_DAYS = 365
OWNER_MEMBER = "owner"


# --- the application form (pure) -------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str  # sniffed, see DOC_TYPES
    body: bytes


@dataclass(frozen=True)
class ApplicationInput:
    company: str
    contact_name: str
    contact_email: str
    site_name: str
    domain: str
    plan: str
    categories: tuple[str, ...]
    regions: tuple[str, ...]
    capability: str
    logo: Upload | None = None
    documents: tuple[Upload, ...] = ()


@dataclass
class FormErrors:
    """Field → message key (locales ``apply_err_*``); empty when the form is valid."""

    fields: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.fields)


def sniff(body: bytes, types: Mapping[bytes, str]) -> str | None:
    return next((t for magic, t in types.items() if body.startswith(magic)), None)


def _list(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in re.split(r"[,\s，、]+", text) if p.strip()))


def parse_application(form: Mapping[str, Any], logo: tuple[str, bytes] | None,
                      documents: list[tuple[str, bytes]]) -> tuple[ApplicationInput, FormErrors]:
    """Validate the application form (text fields, the logo and documents already read).
    Every problem is reported at once, per field, so the applicant fixes them in one go."""
    err = FormErrors()
    text = {k: str(form.get(k, "")).strip() for k in (
        "company", "contact_name", "contact_email", "site_name", "domain", "plan",
        "categories", "regions", "capability")}
    if not 2 <= len(text["company"]) <= 128:
        err.fields["company"] = "apply_err_company"
    if not 1 <= len(text["contact_name"]) <= 128:
        err.fields["contact_name"] = "apply_err_contact_name"
    email = text["contact_email"].lower()
    if len(email) > 254 or not re.match(EMAIL_RE, email):
        err.fields["contact_email"] = "apply_err_email"
    site = text["site_name"].lower()
    if site_name_refusal(site):
        err.fields["site_name"] = ("apply_err_site_reserved"
                                   if "reserved" in (site_name_refusal(site) or "")
                                   else "apply_err_site_name")
    domain = text["domain"].lower().rstrip(".")
    if not DOMAIN_RE.match(domain):
        err.fields["domain"] = "apply_err_domain"
    if text["plan"] not in PLANS:
        err.fields["plan"] = "apply_err_plan"
    categories = _list(text["categories"])
    if not categories or len(categories) > MAX_LIST or not all(
            re.match(CATEGORY_RE, c) and len(c) <= 63 for c in categories):
        err.fields["categories"] = "apply_err_categories"
    regions = tuple(r.upper() for r in _list(text["regions"]))
    if len(regions) > MAX_LIST or not all(re.match(REGION_RE, r) for r in regions):
        err.fields["regions"] = "apply_err_regions"
    if len(text["capability"]) > 4000:
        err.fields["capability"] = "apply_err_capability"
    logo_up = None
    if logo is not None and logo[1]:
        kind = sniff(logo[1], LOGO_TYPES)
        if kind is None:
            err.fields["logo"] = "apply_err_logo_type"
        elif len(logo[1]) > MAX_LOGO_BYTES:
            err.fields["logo"] = "apply_err_logo_size"
        else:
            logo_up = Upload(_filename(logo[0]), kind, logo[1])
    docs: list[Upload] = []
    for name, body in documents:
        if not body:
            continue
        kind = sniff(body, DOC_TYPES)
        if kind is None:
            err.fields["documents"] = "apply_err_doc_type"
            break
        docs.append(Upload(_filename(name), kind, body))
    if len(docs) > MAX_DOCS or sum(len(d.body) for d in docs) > MAX_DOCS_BYTES:
        err.fields["documents"] = "apply_err_doc_size"
    app = ApplicationInput(
        company=text["company"][:128], contact_name=text["contact_name"][:128],
        contact_email=email[:254], site_name=site[:63], domain=domain[:253],
        plan=text["plan"], categories=categories[:MAX_LIST], regions=regions[:MAX_LIST],
        capability=text["capability"][:4000], logo=logo_up, documents=tuple(docs))
    return app, err


def _filename(name: str) -> str:
    # Shown to reviewers and used in a download header: plain characters only.
    return re.sub(r"[^A-Za-z0-9._\-\u4e00-\u9fff]", "_", name or "file")[-100:] or "file"


# --- what approval creates (pure) -------------------------------------------------------


@dataclass(frozen=True)
class SiteChoice:
    """The settings that shape a new site besides the application itself."""

    rolepolicy: str
    owner_role: str
    hq_url: str  # where the partner's logo is served from


def manifests(app: Mapping[str, Any], choice: SiteChoice, now: datetime
              ) -> list[dict[str, Any]]:
    """The License and SubSite for an application; deterministic names (the site's), so a
    second approval or a restarted HQ creates the same objects, and the application's id
    as a label, so HQ adopts only what it created for this application."""
    site = str(app["site_name"])
    labels = {ONBOARDING_APPLICATION_LABEL: str(app["id"]),
              "app.kubernetes.io/created-by": "kameng-hq-onboarding"}
    start = now.replace(microsecond=0)
    categories = list(app["categories"])
    license_ = {
        "apiVersion": API_VERSION, "kind": "License",
        "metadata": {"name": site, "labels": labels},
        "spec": {
            "subSite": site, "plan": app["plan"], "categories": categories,
            "regions": list(app["regions"]),
            "term": {"start": _rfc3339(start), "end": _rfc3339(start + timedelta(days=TERM_DAYS))},
            # Explicit: HQ edits the share per category after review; none until then.
            "fees": {"revenueShare": [{"category": c, "percent": "0"} for c in categories]},
        },
    }
    branding: dict[str, Any] = {"title": str(app["company"])[:64]}
    if app.get("has_logo") and choice.hq_url.startswith("https://"):
        branding["logoUrl"] = f"{choice.hq_url}/apply/{app['id']}/logo"
    spec = {
        "displayName": str(app["company"])[:128],
        "owner": {"name": str(app["contact_name"])[:128], "email": app["contact_email"]},
        "licenseRef": site, "rolePolicyRef": choice.rolepolicy,
        "domain": app["domain"], "branding": branding,
        "members": [{"name": OWNER_MEMBER, "email": app["contact_email"],
                     "role": choice.owner_role}],
        "database": {"reclaimPolicy": "Retain"},
    }
    SubSiteSpec.model_validate(spec)  # the CRD's own model: a bug here fails loudly, not in the API
    subsite = {"apiVersion": API_VERSION, "kind": "SubSite",
               "metadata": {"name": site, "labels": labels}, "spec": spec}
    return [license_, subsite]


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bundle(app: Mapping[str, Any], objects: list[dict[str, Any]]) -> bytes:
    """The GitOps bundle: ``<site>/license.yaml``, ``subsite.yaml`` and a
    ``kustomization.yaml`` listing them (Argo CD and ``kubectl apply -k`` read it)."""
    site = str(app["site_name"])
    files = {
        "license.yaml": objects[0],
        "subsite.yaml": objects[1],
        "kustomization.yaml": {"apiVersion": "kustomize.config.k8s.io/v1beta1",
                               "kind": "Kustomization",
                               "resources": ["license.yaml", "subsite.yaml"]},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, obj in files.items():
            info = zipfile.ZipInfo(f"{site}/{name}", date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))
    return buf.getvalue()


# --- the database -----------------------------------------------------------------------


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def audit(conn: AsyncConnection, actor: str, subject: str, action: str,
                detail: Mapping[str, Any] | None = None) -> None:
    """One row of HQ's append-only audit trail (in the caller's transaction)."""
    await conn.execute("INSERT INTO hq_audit (actor, subject, action, detail)"
                       " VALUES (%s, %s, %s, %s)",
                       (actor, subject, action, Jsonb(dict(detail or {}))))


async def audit_trail(pool: AsyncConnectionPool, subject: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(
            "SELECT at, actor, action, detail FROM hq_audit WHERE subject = %s ORDER BY id",
            (subject,))).fetchall()  # type: ignore[return-value]


# An application claims its site name and domain while it is live: a rejected or expired
# one frees them (the partial unique indexes of migration hq_1801 say the same).
FREED = ["rejected", "expired"]
# Who the expiry sweep acts as in the audit trail and the decision.
EXPIRY_ACTOR = "kameng-hq:expiry"


class Taken(Exception):
    """The site name or domain is claimed (``field`` says which)."""

    def __init__(self, field_: str) -> None:
        super().__init__(field_)
        self.field = field_


async def name_taken(state: AppState, app: ApplicationInput) -> str | None:
    """Which of site name / domain another live application or an existing SubSite
    already has (None if both are free)."""
    async with state.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT bool_or(site_name = %s) AS site, bool_or(domain = %s) AS domain"
            " FROM partner_applications WHERE status <> ALL(%s)"
            " AND (site_name = %s OR domain = %s)",
            (app.site_name, app.domain, FREED, app.site_name, app.domain))).fetchone()
    if row and row["site"]:
        return "site_name"
    if row and row["domain"]:
        return "domain"
    kube = kube_of(state)
    if kube is not None:
        try:
            if await kube.get(path_for(API_VERSION, "SubSite", app.site_name)) is not None:
                return "site_name"
        except KubeError as exc:  # HQ without the API: the operator refuses a clash later
            log.warning("site name check without the API", extra={"status": exc.status})
    return None


async def submit(state: AppState, app: ApplicationInput) -> tuple[str, str]:
    """Store a new application; returns (id, the partner's access key for its page)."""
    taken = await name_taken(state, app)
    if taken:
        raise Taken(taken)
    aid, key = "A" + secrets.token_hex(8), secrets.token_urlsafe(24)
    try:
        async with state.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO partner_applications (id, access_hash, company, contact_name,"
                " contact_email, site_name, domain, plan, categories, regions, capability,"
                " logo, logo_type) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (aid, _hash(key), app.company, app.contact_name, app.contact_email,
                 app.site_name, app.domain, app.plan, list(app.categories), list(app.regions),
                 app.capability, app.logo.body if app.logo else None,
                 app.logo.content_type if app.logo else None))
            for d in app.documents:
                await conn.execute(
                    "INSERT INTO partner_application_documents (application_id, filename,"
                    " content_type, body) VALUES (%s, %s, %s, %s)",
                    (aid, d.filename, d.content_type, d.body))
            await audit(conn, app.contact_email, f"application:{aid}", "submitted",
                        {"site": app.site_name, "domain": app.domain, "plan": app.plan})
    except UniqueViolation as exc:  # the same name raced in between
        raise Taken("domain" if "domain" in str(exc.diag.constraint_name) else "site_name"
                    ) from None
    log.info("partner application submitted", extra={"application": aid,
                                                     "site": app.site_name})
    return aid, key


_COLUMNS = ("id, status, company, contact_name, contact_email, site_name, domain, plan,"
            " categories, regions, capability, logo IS NOT NULL AS has_logo,"
            " qualification_notes, credit_notes, capability_notes, decided_by, decided_at,"
            " reason, provision_mode, provisioned_at, created_at,"
            " (SELECT count(*) FROM partner_application_documents d"
            "   WHERE d.application_id = a.id) AS documents")


async def applications(pool: AsyncConnectionPool, limit: int = 200) -> list[dict[str, Any]]:
    """The queue: pending first (oldest first), then the most recent decisions."""
    async with pool.connection() as conn:
        return await (await conn.execute(
            f"SELECT {_COLUMNS} FROM partner_applications a"  # noqa: S608 - constant columns
            " ORDER BY (status = 'pending') DESC,"
            " CASE WHEN status = 'pending' THEN created_at END ASC, created_at DESC"
            " LIMIT %s", (limit,))).fetchall()  # type: ignore[return-value]


async def application(pool: AsyncConnectionPool, aid: str) -> dict[str, Any] | None:
    async with pool.connection() as conn:
        return await (await conn.execute(
            f"SELECT {_COLUMNS}, access_hash FROM partner_applications a"  # noqa: S608
            " WHERE id = %s",
            (aid,))).fetchone()  # type: ignore[return-value]


async def documents(pool: AsyncConnectionPool, aid: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(
            "SELECT id, filename, content_type, length(body) AS size"
            " FROM partner_application_documents WHERE application_id = %s ORDER BY id",
            (aid,))).fetchall()  # type: ignore[return-value]


async def document(pool: AsyncConnectionPool, aid: str, doc: int) -> dict[str, Any] | None:
    async with pool.connection() as conn:
        return await (await conn.execute(
            "SELECT filename, content_type, body FROM partner_application_documents"
            " WHERE application_id = %s AND id = %s", (aid, doc))).fetchone()  # type: ignore


async def logo(pool: AsyncConnectionPool, aid: str) -> tuple[bytes, str] | None:
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT logo, logo_type FROM partner_applications WHERE id = %s AND logo IS NOT NULL",
            (aid,))).fetchone()
    return (bytes(row["logo"]), row["logo_type"]) if row else None


NOTE_FIELDS = ("qualification_notes", "credit_notes", "capability_notes")


async def save_notes(pool: AsyncConnectionPool, aid: str, actor: str,
                     notes: Mapping[str, str]) -> bool:
    """The reviewers' checks (qualification, credit, capability) while still pending."""
    values = [str(notes.get(f, ""))[:4000] for f in NOTE_FIELDS]
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "UPDATE partner_applications SET qualification_notes = %s, credit_notes = %s,"
            " capability_notes = %s WHERE id = %s AND status = 'pending'", (*values, aid))
        if cur.rowcount != 1:
            return False
        await audit(conn, actor, f"application:{aid}", "checks_noted",
                    dict(zip(NOTE_FIELDS, values, strict=True)))
    return True


async def reject(pool: AsyncConnectionPool, aid: str, actor: str, reason: str) -> bool:
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "UPDATE partner_applications SET status = 'rejected', decided_by = %s,"
            " decided_at = now(), reason = %s WHERE id = %s AND status = 'pending'",
            (actor, reason[:2000], aid))
        if cur.rowcount != 1:
            return False
        await audit(conn, actor, f"application:{aid}", "rejected", {"reason": reason[:2000]})
    log.info("partner application rejected", extra={"application": aid, "staff": actor})
    return True


class NotApprovable(Exception):
    pass


async def approve(state: AppState, aid: str, actor: str, reason: str) -> dict[str, Any]:
    """Decide (pending → approved, once) and provision. Clicking again, or after HQ
    crashed between the two, provisions again: creating is create-or-adopt, so the end
    state is the same objects. Raises :class:`NotApprovable` for a rejected application
    and :class:`Taken` when an object of that name was not created for it."""
    mode = state.settings.onboarding_mode
    async with state.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "UPDATE partner_applications SET status = 'approved', decided_by = %s,"
            " decided_at = now(), reason = %s, provision_mode = %s"
            " WHERE id = %s AND status = 'pending'", (actor, reason[:2000], mode, aid))
        if cur.rowcount == 1:
            await audit(conn, actor, f"application:{aid}", "approved",
                        {"reason": reason[:2000], "mode": mode})
    app = await application(state.pool, aid)
    if app is None or app["status"] == "rejected":
        raise NotApprovable(aid)
    if app["provision_mode"] == "kubernetes":
        objects = manifests(app, site_choice(state), app["decided_at"])
        await create_or_adopt(state, aid, objects)
    async with state.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "UPDATE partner_applications SET status = 'provisioned', provisioned_at = now()"
            " WHERE id = %s AND status = 'approved'", (aid,))
        if cur.rowcount == 1:
            await audit(conn, actor, f"application:{aid}", "provisioned",
                        {"mode": app["provision_mode"], "site": app["site_name"]})
    log.info("partner application approved", extra={
        "application": aid, "staff": actor, "mode": app["provision_mode"]})
    return await application(state.pool, aid) or app


# --- the public form's rate limit ----------------------------------------------------------

APPLY_WINDOW_SECONDS = 3600


def instance_prefix(state: AppState) -> str:
    """Redis key prefix of THIS HQ: every HQ has its own database, and its replicas share
    it, so the database's address names the instance (a password change keeps it). Two
    HQs on one Redis (parallel test HQs, a staging HQ) never count each other's traffic."""
    info = conninfo_to_dict(state.settings.database_url)
    where = "\0".join(str(info.get(k, "")) for k in ("host", "port", "dbname"))
    return f"hq:{hashlib.sha256(where.encode()).hexdigest()[:16]}:apply"


async def apply_allowed(state: AppState, client: str) -> bool:
    """Count one submission of /apply against its client (an IPv4 address or IPv6 /64)
    and against all clients, in fixed hourly windows; False once either is over its
    limit. Every submission counts, refused or not: a name-availability probe costs the
    same as an application. Redis down: allowed and logged (the form has its own checks;
    an outage must not close onboarding)."""
    prefix = instance_prefix(state)
    digest = hashlib.sha256(client_subject(client).encode()).hexdigest()[:32]
    keys = (f"{prefix}:client:{digest}", f"{prefix}:all")
    limits = (state.settings.apply_per_client_per_hour, state.settings.apply_per_hour)
    try:
        async with state.redis.pipeline(transaction=True) as pipe:
            for key in keys:
                # The window starts at the first submission and ends by itself (TTL).
                pipe.set(key, 0, ex=APPLY_WINDOW_SECONDS, nx=True)
                pipe.incr(key)
            counts = (await pipe.execute())[1::2]
    except RedisError as exc:
        log.warning("apply rate limit unavailable, not enforced",
                    extra={"error": type(exc).__name__})
        return True
    return all(int(c) <= limit for c, limit in zip(counts, limits, strict=True))


# --- expiry of pending applications ------------------------------------------------------


async def expire_stale(state: AppState) -> list[str]:
    """Expire every application pending for longer than the expiry setting: it stops
    holding its site name and domain, can no longer be decided, and the audit trail and
    the partner's page say why. Returns the ids expired."""
    days = state.settings.application_expiry_days
    async with state.pool.connection() as conn, conn.transaction():
        rows = await (await conn.execute(
            "UPDATE partner_applications SET status = 'expired', decided_by = %s,"
            " decided_at = now(), reason = %s"
            " WHERE status = 'pending' AND created_at < now() - make_interval(secs => %s)"
            " RETURNING id, site_name, domain",
            (EXPIRY_ACTOR, f"not reviewed within {days:g} days", days * 86400))).fetchall()
        for r in rows:
            await audit(conn, EXPIRY_ACTOR, f"application:{r['id']}", "expired",
                        {"site": r["site_name"], "domain": r["domain"], "days": days})
    if rows:
        log.info("pending applications expired", extra={"count": len(rows)})
    return [r["id"] for r in rows]


async def expiry_sweeper(state: AppState) -> None:
    """HQ's background loop (leader only) running :func:`expire_stale`."""
    while True:
        try:
            await expire_stale(state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next round retries; nothing is half-expired
            log.warning("application expiry failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(state.settings.onboarding_sweep_seconds)


def site_choice(state: AppState) -> SiteChoice:
    s = state.settings
    return SiteChoice(rolepolicy=s.onboarding_rolepolicy, owner_role=s.onboarding_owner_role,
                      hq_url=s.public_url)


def kube_of(state: AppState) -> Kube | None:
    """HQ's one Kubernetes client (:meth:`AppState.kube_client`); None where HQ has no
    ServiceAccount and no kubeconfig setting."""
    try:
        return state.kube_client()
    except Exception as exc:  # KubeUnavailable, or an unreadable kubeconfig
        log.warning("no Kubernetes API for HQ", extra={"error": type(exc).__name__})
        return None


async def create_or_adopt(state: AppState, aid: str, objects: list[dict[str, Any]]) -> None:
    kube = kube_of(state)
    if kube is None:
        raise KubeError(0, "Unreachable", "HQ has no Kubernetes API access")
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        created = await kube.create(path_for(API_VERSION, kind), obj)
        if created is not None:
            log.info("onboarding created", extra={"kind": kind, "object": name,
                                                  "application": aid})
            continue
        existing = await kube.get(path_for(API_VERSION, kind, name), kind=kind)
        labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
        if labels.get(ONBOARDING_APPLICATION_LABEL) != aid:
            # Someone else's object: never adopted, never changed.
            raise Taken("site_name")


# --- readiness and the invitation -------------------------------------------------------


@dataclass(frozen=True)
class SiteProgress:
    phase: str  # the SubSite's phase, '' before it exists or without API access
    ready: bool
    url: str
    message: str = ""


async def progress(state: AppState, site: str) -> SiteProgress:
    kube = kube_of(state)
    if kube is None:
        return SiteProgress("", False, "")
    try:
        ss = await kube.get(path_for(API_VERSION, "SubSite", site), kind="SubSite")
    except KubeError as exc:
        return SiteProgress("", False, "", exc.reason)
    if ss is None:
        return SiteProgress("", False, "")
    status = ss.get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == READY), {})
    return SiteProgress(str(status.get("phase") or ""), cond.get("status") == "True",
                        str(status.get("url") or ""), str(cond.get("message") or "")[:300])


async def owner_invitation(state: AppState, app: Mapping[str, Any], site_url: str) -> str | None:
    """A fresh one-time link for the new site's owner to set a password, minted from the
    operator's copy of the site's keys (HQ's namespace); None until that copy exists."""
    kube = kube_of(state)
    if kube is None:
        return None
    site = str(app["site_name"])
    obj = await kube.get(path_for("v1", "Secret", pod.site_keys_copy(site),
                                  state.settings.namespace), kind="Secret")
    data = (obj or {}).get("data") or {}
    if pod.SESSION_SECRET.key not in data:
        return None
    session = base64.b64decode(data[pod.SESSION_SECRET.key]).decode()
    token = invitation.issue(session, site, OWNER_MEMBER, str(app["contact_email"]))
    return invitation.invitation_url(site_url, token)


async def record_invited(pool: AsyncConnectionPool, aid: str, actor: str) -> None:
    async with pool.connection() as conn:
        await audit(conn, actor, f"application:{aid}", "invitation_issued")


def access_ok(app: Mapping[str, Any], key: str) -> bool:
    return bool(key) and hmac.compare_digest(_hash(key), str(app["access_hash"]))


# --- routes -----------------------------------------------------------------------------


async def _upload(form: Any, name: str) -> list[tuple[str, bytes]]:
    out = []
    for item in form.getlist(name):
        if hasattr(item, "read"):
            out.append((str(item.filename or ""), await item.read()))
    return out


async def apply_page(request: Request) -> Response:
    return render(request, "hq/apply.html", errors={}, values={}, plans=PLANS)


async def apply_submit(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    state = state_of(request)
    if not await apply_allowed(state, request.client.host if request.client else ""):
        response = error_page(request, 429, "apply_rate_limited")
        response.headers["Retry-After"] = str(APPLY_WINDOW_SECONDS)
        return response
    logos = await _upload(form, "logo")
    app, errors = parse_application(form, logos[0] if logos else None,
                                    await _upload(form, "documents"))
    if not errors:
        try:
            aid, key = await submit(state, app)
        except Taken as exc:
            errors.fields[exc.field] = f"apply_err_{exc.field}_taken"
        else:
            return RedirectResponse(f"/apply/{aid}?k={key}", status_code=303)
    values = {k: str(form.get(k, "")) for k in (
        "company", "contact_name", "contact_email", "site_name", "domain", "plan",
        "categories", "regions", "capability")}
    return render(request, "hq/apply.html", status_code=422, errors=errors.fields,
                  values=values, plans=PLANS)


async def application_status(request: Request) -> Response:
    """The partner's private page: where the application stands, and once the shop is
    Ready, the invitation to its back office."""
    state = state_of(request)
    app = await application(state.pool, request.path_params["aid"])
    key = request.query_params.get("k", "")
    if app is None or not access_ok(app, key):
        return error_page(request, 404, "not_found")
    prog = await progress(state, app["site_name"]) if app["status"] == "provisioned" \
        else SiteProgress("", False, "")
    link = None
    if prog.ready:
        link = await owner_invitation(state, app, prog.url)
        if link:
            await record_invited(state.pool, app["id"], app["contact_email"])
    response = render(request, "hq/apply_status.html", app=app, progress=prog,
                      invitation_link=link)
    response.headers["Cache-Control"] = "no-store"  # it may carry a one-time link
    # The address holds the partner's access key: never sent on as a Referer (e.g. to
    # the shop when the invitation link is followed).
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def public_logo(request: Request) -> Response:
    """The logo of an approved application (the new shop's branding points here)."""
    state = state_of(request)
    app = await application(state.pool, request.path_params["aid"])
    found = await logo(state.pool, request.path_params["aid"]) if app and \
        app["status"] == "provisioned" else None
    if found is None:
        return error_page(request, 404, "not_found")
    return Response(found[0], media_type=found[1], headers={
        "X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"})


@requires()
async def queue_page(request: Request, staff: Staff) -> Response:
    rows = await applications(state_of(request).pool)
    return render(request, "hq/applications.html", rows=rows, app=None,
                  message=request.query_params.get("msg", ""))


async def _app_or_404(request: Request) -> dict[str, Any] | None:
    return await application(state_of(request).pool, request.path_params["aid"])


@requires()
async def detail_page(request: Request, staff: Staff) -> Response:
    state = state_of(request)
    app = await _app_or_404(request)
    if app is None:
        return error_page(request, 404, "not_found")
    prog = await progress(state, app["site_name"]) if app["status"] == "provisioned" \
        else SiteProgress("", False, "")
    link = None
    if prog.ready and request.query_params.get("invite") == "1":
        link = await owner_invitation(state, app, prog.url)
        if link:
            await record_invited(state.pool, app["id"], staff.email)
    taken = await name_taken_for_review(state, app)
    response = render(
        request, "hq/applications.html", rows=[], app=app, progress=prog,
        docs=await documents(state.pool, app["id"]), invitation_link=link, taken=taken,
        trail=await audit_trail(state.pool, f"application:{app['id']}"),
        mode=state.settings.onboarding_mode, message=request.query_params.get("msg", ""))
    response.headers["Cache-Control"] = "no-store"
    return response


async def name_taken_for_review(state: AppState, app: Mapping[str, Any]) -> str | None:
    """The automatic check reviewers see: does a SubSite of that name exist that this
    application did not create?"""
    if app["status"] != "pending":
        return None
    kube = kube_of(state)
    if kube is None:
        return None
    try:
        ss = await kube.get(path_for(API_VERSION, "SubSite", app["site_name"]))
    except KubeError:
        return None
    return "site_name" if ss is not None else None


@requires()
async def notes_submit(request: Request, staff: Staff) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    aid = request.path_params["aid"]
    ok = await save_notes(state_of(request).pool, aid, staff.email, form)  # type: ignore[arg-type]
    return RedirectResponse(f"/admin/applications/{aid}?msg={'saved' if ok else 'decided'}",
                            status_code=303)


@requires()
async def decide(request: Request, staff: Staff) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    aid, decision = request.path_params["aid"], request.path_params["decision"]
    reason = str(form.get("reason", "")).strip()
    state = state_of(request)
    if decision == "reject":
        if not reason:
            return error_page(request, 400, "reason_required")
        ok = await reject(state.pool, aid, staff.email, reason)
        return RedirectResponse(f"/admin/applications/{aid}?msg="
                                f"{'rejected' if ok else 'decided'}", status_code=303)
    if decision != "approve":
        return error_page(request, 404, "not_found")
    try:
        await approve(state, aid, staff.email, reason)
    except NotApprovable:
        return RedirectResponse(f"/admin/applications/{aid}?msg=decided", status_code=303)
    except Taken:
        return RedirectResponse(f"/admin/applications/{aid}?msg=name_taken", status_code=303)
    except KubeError as exc:
        # Decided but not provisioned: the page offers "approve" again (idempotent).
        log.warning("onboarding provisioning failed", extra={
            "application": aid, "status": exc.status, "reason": exc.reason})
        return RedirectResponse(f"/admin/applications/{aid}?msg=provision_failed",
                                status_code=303)
    return RedirectResponse(f"/admin/applications/{aid}?msg=approved", status_code=303)


@requires()
async def bundle_download(request: Request, staff: Staff) -> Response:
    state = state_of(request)
    app = await _app_or_404(request)
    if app is None or app["status"] not in ("approved", "provisioned"):
        return error_page(request, 404, "not_found")
    body = bundle(app, manifests(app, site_choice(state), app["decided_at"]))
    async with state.pool.connection() as conn:
        await audit(conn, staff.email, f"application:{app['id']}", "bundle_downloaded")
    return Response(body, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{app["site_name"]}-kameng.zip"'})


@requires()
async def document_download(request: Request, staff: Staff) -> Response:
    try:
        doc_id = int(request.path_params["doc"])
    except ValueError:
        return error_page(request, 404, "not_found")
    doc = await document(state_of(request).pool, request.path_params["aid"], doc_id)
    if doc is None:
        return error_page(request, 404, "not_found")
    # Always a download, never rendered in HQ's origin (a PDF or image from a stranger).
    return Response(bytes(doc["body"]), media_type=doc["content_type"], headers={
        "Content-Disposition": f'attachment; filename="{doc["filename"]}"',
        "X-Content-Type-Options": "nosniff"})


@requires()
async def review_logo(request: Request, staff: Staff) -> Response:
    found = await logo(state_of(request).pool, request.path_params["aid"])
    if found is None:
        return error_page(request, 404, "not_found")
    return Response(found[0], media_type=found[1], headers={"X-Content-Type-Options": "nosniff"})


def public_routes() -> list[Route]:
    return [
        Route("/apply", apply_page),
        Route("/apply", apply_submit, methods=["POST"]),
        Route("/apply/{aid:str}", application_status),
        Route("/apply/{aid:str}/logo", public_logo),
    ]


def admin_routes() -> list[Route]:
    """Under HQ's ``/admin`` mount."""
    return [
        Route("/applications", queue_page),
        Route("/applications/{aid:str}", detail_page),
        Route("/applications/{aid:str}/notes", notes_submit, methods=["POST"]),
        Route("/applications/{aid:str}/bundle.zip", bundle_download),
        Route("/applications/{aid:str}/logo", review_logo),
        Route("/applications/{aid:str}/documents/{doc:str}", document_download),
        Route("/applications/{aid:str}/{decision:str}", decide, methods=["POST"]),
    ]

