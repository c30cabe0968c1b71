"""HQ approvals: changes a partner's staff asked for in their back office (the kinds of
``RolePolicy.spec.approvals``) wait here until HQ decides; an approved change is applied to
the SubSite through the Kubernetes API (ClusterRole ``kameng-hq-approvals``: get/patch
subsites, get rolepolicies), marked with the request's id (annotation
``kameng.io/approved-change``), so the operator can tell it from a YAML edit. A kind the
site's RolePolicy does not list is applied at once (decided by ``policy``). Every request
keeps who asked, what, when, and who decided what and why (``approval_requests`` and the
append-only ``hq_audit``).

SQL, rules and API calls here; the routes at the bottom translate.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from kameng.api.common import API_VERSION
from kameng.api.kinds import APPROVED_CHANGE_ANNOTATION
from kameng.contracts.hq_api import (
    ACTION_PERMISSIONS,
    ADMIN_APPROVALS_PATH,
    ADMIN_DECISION_PATH,
    ADMIN_TOKEN_HEADER,
    APPROVALS_PATH,
    ApiError,
    ApprovalList,
    ApprovalView,
    ChangeRequest,
    DecisionRequest,
    change_patch,
    normalise_change,
)
from kameng.kube.client import KubeError, path_for

from ..state import AppState, state_of
from ..web.auth import requires
from ..web.render import csrf_ok, error_page, render
from ..web.staff import Staff
from .onboarding import audit, audit_trail, kube_of
from .site_auth import ApiRefused, authenticate_site

log = logging.getLogger("kameng.storefront.hq.approvals")

POLICY_ACTOR = "policy"


def _iso(t: datetime | None) -> str:
    return t.isoformat() if t else ""


def view(row: dict[str, Any]) -> ApprovalView:
    return ApprovalView(
        id=row["id"], site=row["site"], kind=row["kind"], change=row["change"],
        requested_by=row["requested_by"], requested_at=_iso(row["requested_at"]),
        note=row["note"], status=row["status"], decided_by=row["decided_by"] or "",
        decided_at=_iso(row["decided_at"]), decision_reason=row["decision_reason"],
        applied_at=_iso(row["applied_at"]), error=row["error"])


async def requests_of(pool: AsyncConnectionPool, site: str | None = None,
                      status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    where, params = [], []
    if site is not None:
        where.append("site = %s")
        params.append(site)
    if status is not None:
        where.append("status = %s")
        params.append(status)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    async with pool.connection() as conn:
        return await (await conn.execute(
            "SELECT * FROM approval_requests" + clause  # noqa: S608 - fixed fragments
            + " ORDER BY (status = 'pending') DESC, requested_at DESC LIMIT %s",
            (*params, limit))).fetchall()  # type: ignore[return-value]


async def request_by_id(pool: AsyncConnectionPool, rid: str) -> dict[str, Any] | None:
    async with pool.connection() as conn:
        return await (await conn.execute(
            "SELECT * FROM approval_requests WHERE id = %s", (rid,))).fetchone()  # type: ignore


async def submit(state: AppState, site: str, req: ChangeRequest) -> dict[str, Any]:
    """Record a site's request (the same ``request_key`` again returns the first one).
    Raises ``ValueError`` for a change the SubSite could not hold."""
    # Refuse now what could never be applied; keep only what the SubSite would hold.
    change = normalise_change(req.kind, req.change)
    rid = "R" + secrets.token_hex(8)
    async with state.pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(
            "INSERT INTO approval_requests (id, site, request_key, kind, change, requested_by,"
            " note) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (site, request_key) DO NOTHING RETURNING *",
            (rid, site, req.request_key, req.kind, Jsonb(change), req.requested_by,
             req.note))).fetchone()
        if row is not None:
            await audit(conn, f"{site}:{req.requested_by}", f"approval:{rid}", "requested",
                        {"site": site, "kind": req.kind, "change": change,
                         "note": req.note})
    if row is None:  # a retry: the first request stands
        async with state.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT * FROM approval_requests WHERE site = %s AND request_key = %s",
                (site, req.request_key))).fetchone()
        return row  # type: ignore[return-value]
    log.info("approval requested", extra={"site": site, "request": rid, "kind": req.kind})
    if not await needs_approval(state, site, req.kind):
        await decide(state, rid, "approve", POLICY_ACTOR, "not listed in the RolePolicy's"
                     " approvals")
    return await request_by_id(state.pool, rid) or row


async def needs_approval(state: AppState, site: str, kind: str) -> bool:
    """Whether the site's RolePolicy lists ``kind``; True whenever that cannot be read
    (no API, no policy): a change then waits for a person rather than slip through."""
    kube = kube_of(state)
    if kube is None:
        return True
    try:
        ss = await kube.get(path_for(API_VERSION, "SubSite", site), kind="SubSite")
        ref = ((ss or {}).get("spec") or {}).get("rolePolicyRef")
        rp = await kube.get(path_for(API_VERSION, "RolePolicy", ref), kind="RolePolicy") \
            if ref else None
    except KubeError:
        return True
    if rp is None:
        return True
    return kind in ((rp.get("spec") or {}).get("approvals") or [])


class NotDecidable(Exception):
    pass


async def decide(state: AppState, rid: str, decision: str, actor: str, reason: str
                 ) -> dict[str, Any]:
    """pending → rejected | approved → applied (or failed, with the API's reason; approving
    a failed one again retries). Raises :class:`NotDecidable` otherwise."""
    if decision not in ("approve", "reject"):
        raise NotDecidable(decision)
    new = "approved" if decision == "approve" else "rejected"
    allowed = ("pending", "failed") if decision == "approve" else ("pending",)
    async with state.pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(
            "UPDATE approval_requests SET status = %s, decided_by = %s, decided_at = now(),"
            " decision_reason = %s, error = '' WHERE id = %s AND status = ANY(%s) RETURNING *",
            (new, actor, reason[:2000], rid, list(allowed)))).fetchone()
        if row is None:
            raise NotDecidable(rid)
        await audit(conn, actor, f"approval:{rid}", new, {"reason": reason[:2000]})
    log.info("approval decided", extra={"request": rid, "decision": new, "staff": actor})
    # A money action (ACTION_PERMISSIONS) is the shop's to make once it sees the approval;
    # HQ has nothing to patch, and ``approved`` is its final status.
    if new == "approved" and row["kind"] not in ACTION_PERMISSIONS:
        await apply(state, row)
    return await request_by_id(state.pool, rid) or row


async def apply(state: AppState, row: dict[str, Any]) -> None:
    rid, site = row["id"], row["site"]
    patch = change_patch(row["kind"], row["change"])
    patch["metadata"] = {"annotations": {APPROVED_CHANGE_ANNOTATION: rid}}
    kube = kube_of(state)
    error = ""
    try:
        if kube is None:
            raise KubeError(0, "Unreachable", "HQ has no Kubernetes API access")
        await kube.merge_patch(path_for(API_VERSION, "SubSite", site), patch, kind="SubSite")
    except KubeError as exc:
        error = f"{exc.status} {exc.reason}"[:300]  # the API's message may quote values
    async with state.pool.connection() as conn, conn.transaction():
        if error:
            await conn.execute("UPDATE approval_requests SET status = 'failed', error = %s"
                               " WHERE id = %s", (error, rid))
            await audit(conn, "hq", f"approval:{rid}", "apply_failed", {"error": error})
        else:
            await conn.execute("UPDATE approval_requests SET status = 'applied',"
                               " applied_at = now() WHERE id = %s", (rid,))
            await audit(conn, "hq", f"approval:{rid}", "applied", {"site": site})
    log.info("approved change applied" if not error else "approved change not applied",
             extra={"request": rid, "site": site, "error": error})


# --- the site's API (``/api/v1/approvals``, the site's token) -------------------------


def _error(status: int, code: str) -> JSONResponse:
    return JSONResponse(ApiError(error=code).model_dump(), status_code=status)


async def api_submit(request: Request) -> Response:
    try:
        # A suspended site may not change anything.
        site = authenticate_site(request)
        req = ChangeRequest.model_validate(await request.json())
        row = await submit(state_of(request), site, req)
    except ApiRefused as exc:
        return _error(exc.status, exc.code)
    except ValueError:
        return _error(400, "bad_change")
    return JSONResponse(view(row).model_dump())


async def api_list(request: Request) -> Response:
    try:
        site = authenticate_site(request, allow_suspended=True)
    except ApiRefused as exc:
        return _error(exc.status, exc.code)
    rows = await requests_of(state_of(request).pool, site=site)
    return JSONResponse(ApprovalList(requests=[view(r) for r in rows]).model_dump())


# --- HQ's admin API (``kubectl kameng approvals``) -------------------------------------


def admin_token_ok(request: Request) -> bool:
    expected = state_of(request).settings.admin_api_token
    sent = request.headers.get(ADMIN_TOKEN_HEADER, "")
    # Digests: equal length for compare_digest, whatever was sent.
    return bool(expected) and hmac.compare_digest(
        hashlib.sha256(sent.encode()).digest(), hashlib.sha256(expected.encode()).digest())


async def admin_list(request: Request) -> Response:
    if not admin_token_ok(request):
        return _error(401, "unauthenticated")
    status = request.query_params.get("status") or None
    site = request.query_params.get("site") or None
    rows = await requests_of(state_of(request).pool, site=site, status=status)
    return JSONResponse(ApprovalList(requests=[view(r) for r in rows]).model_dump())


async def admin_decide(request: Request) -> Response:
    if not admin_token_ok(request):
        return _error(401, "unauthenticated")
    try:
        body = DecisionRequest.model_validate(await request.json())
    except ValueError:
        return _error(400, "bad_request")
    decision = request.path_params["decision"]
    if decision == "reject" and not body.reason.strip():
        return _error(400, "reason_required")
    try:
        row = await decide(state_of(request), request.path_params["rid"], decision,
                           f"kubectl:{body.by}", body.reason)
    except NotDecidable:
        return _error(409, "not_pending")
    return JSONResponse(view(row).model_dump())


# --- HQ's back office -----------------------------------------------------------------


@requires()
async def approvals_page(request: Request, staff: Staff) -> Response:
    pool = state_of(request).pool
    rid = request.query_params.get("id")
    selected = await request_by_id(pool, rid) if rid else None
    return render(request, "hq/approvals.html", rows=await requests_of(pool),
                  selected=selected,
                  trail=await audit_trail(pool, f"approval:{rid}") if selected else [],
                  message=request.query_params.get("msg", ""))


@requires()
async def approvals_decide(request: Request, staff: Staff) -> Response:
    form = await request.form()
    if not csrf_ok(request, form):
        return error_page(request, 400, "bad_request")
    rid, decision = request.path_params["rid"], request.path_params["decision"]
    reason = str(form.get("reason", "")).strip()
    if decision == "reject" and not reason:
        return error_page(request, 400, "reason_required")
    try:
        row = await decide(state_of(request), rid, decision, staff.email, reason)
    except NotDecidable:
        return RedirectResponse(f"/admin/approvals?id={rid}&msg=decided", status_code=303)
    return RedirectResponse(f"/admin/approvals?id={rid}&msg={row['status']}", status_code=303)


def api_routes(under_mount: Callable[[str], str]) -> list[Route]:
    """Relative to HQ's API mount (``under_mount`` strips its prefix from the contract's
    paths)."""
    return [
        Route(under_mount(APPROVALS_PATH), api_submit, methods=["POST"]),
        Route(under_mount(APPROVALS_PATH), api_list),
        Route(under_mount(ADMIN_APPROVALS_PATH), admin_list),
        Route(under_mount(ADMIN_DECISION_PATH), admin_decide, methods=["POST"]),
    ]


def admin_routes() -> list[Route]:
    """Under HQ's ``/admin`` mount."""
    return [
        Route("/approvals", approvals_page),
        Route("/approvals/{rid:str}/{decision:str}", approvals_decide, methods=["POST"]),
    ]
