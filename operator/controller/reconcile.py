"""One idempotent reconcile of one SubSite: observe, provision, apply what differs,
report. Safe to interrupt at any point: every step converges when run again."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kameng.api import conditions as c
from kameng.api.common import API_VERSION
from kameng.api.kinds import (
    ACTED_ON_ANNOTATIONS,
    ROTATE_CREDENTIALS_ANNOTATION,
    SHOP_URL_ANNOTATION,
)
from kameng.api.license import LicenseSpec
from kameng.api.resources import SUBSITE
from kameng.api.rolepolicy import RolePolicySpec
from kameng.api.subsite import SubSiteSpec
from kameng.children.build import build_children
from kameng.children.context import SiteContext, SiteSecrets, namespace_name
from kameng.children.namespace import namespace as namespace_of
from kameng.children.rbac import MEMBER_PREFIX
from kameng.children.secrets import unb64
from kameng.contracts.hq_auth import SiteCredential
from kameng.contracts.license_token import LicenseClaims, TokenError, verify_token
from kameng.contracts.pod import DB_SECRET, KEYS_SECRET, LICENSE_SECRET, LICENSE_TOKEN, REDIS_SECRET
from kameng.kube import events
from kameng.kube.cache import key_of
from kameng.kube.client import KubeError, path_for, path_of
from kameng.kube.drift import needs_apply, with_hash
from kameng.licensing.verdict import LicenseVerdict, token_for, verdict_for
from kameng.provision.postgres import DatabaseUnavailable, site_dsn
from kameng.provision.redis_acl import RedisUnavailable, site_url

from . import credentials, keyvault, metrics, sitecreds, status
from .runtime import Runtime

log = logging.getLogger(__name__)
NOT_READY_RECHECK = 30.0
MAX_BACKOFF = 60.0
# After a failure, wake-ups are ignored this long: a rollout's stream of events must not
# turn a backoff into a retry storm against a server that is down.
MIN_RETRY_PAUSE = 2.0


def _jitter(seconds: float, fraction: float) -> float:
    return seconds * (1 + random.uniform(-fraction, fraction))  # noqa: S311 - not crypto


async def _live(rt: Runtime, obj: dict[str, Any], fresh_namespace: str | None = None
                ) -> dict[str, Any] | None:
    cached = rt.cache.get(key_of(obj))
    if cached is not None:
        return cached
    if fresh_namespace and obj["metadata"].get("namespace") == fresh_namespace:
        return None  # the namespace was just created: nothing can be in it yet
    live = await rt.kube.get(path_of(obj), kind=obj["kind"])
    if live is not None:
        rt.cache.put(live)
    return live


async def _apply_if_changed(rt: Runtime, obj: dict[str, Any],
                            fresh_namespace: str | None = None) -> bool:
    desired = with_hash(obj)
    if not needs_apply(desired, await _live(rt, obj, fresh_namespace)):
        return False
    rt.cache.put(await rt.kube.apply(desired))
    metrics.CHILDREN_APPLIED.labels(kind=obj["kind"]).inc()
    return True


async def _prune_members(rt: Runtime, site: str, desired: list[dict[str, Any]]) -> None:
    """Roles of members who left or lost their Kubernetes access."""
    wanted = {key_of(o) for o in desired}
    for obj in rt.cache.of_site(site, {"Role", "RoleBinding"}):
        if obj["metadata"]["name"].startswith(MEMBER_PREFIX) and key_of(obj) not in wanted:
            await rt.kube.delete(path_of(obj), kind=obj["kind"])
            rt.cache.remove(key_of(obj))


def _problem(spec: SubSiteSpec, rp: RolePolicySpec | None) -> tuple[str, str] | None:
    if rp is None:
        return c.R_ROLEPOLICY_NOT_FOUND, f"RolePolicy {spec.role_policy_ref!r} does not exist"
    roles = {r.name for r in rp.roles}
    unknown = sorted({m.role for m in spec.members if m.role not in roles})
    if unknown:
        return c.R_UNKNOWN_ROLE, (f"members use roles missing from RolePolicy "
                               f"{spec.role_policy_ref!r}: {', '.join(unknown)}")
    return None


def acted_on_annotations(meta: Any) -> dict[str, str]:
    """The SubSite's annotations the reconcile acts on (absent ones left out)."""
    annotations = meta.get("annotations") or {}
    return {k: str(annotations[k]) for k in ACTED_ON_ANNOTATIONS if annotations.get(k)}


def _secret_probe(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}}


async def _provision(rt: Runtime, site: str, namespace: str, fresh: bool, rotation: str
                     ) -> tuple[SiteSecrets, set[str], str | None]:
    """Database role/db, Redis user and the site's HQ API token. Returns the secrets, the
    names of Secrets that must NOT be applied this round, and a transient error message."""
    found = {}
    for name in (DB_SECRET, REDIS_SECRET, KEYS_SECRET):
        found[name] = await _live(rt, _secret_probe(name, namespace),
                                  namespace if fresh else None)
    old = credentials.read_existing(found)
    db_pw, db_new = credentials.or_new(old.db_password)
    redis_pw, redis_new = credentials.or_new(old.redis_password)
    # Shielded: if the loop is cancelled (the SubSite is being deleted), provisioning
    # still finishes under the lock, and the reclaim that waits for the lock then drops
    # what it created.
    skip, error = await asyncio.shield(asyncio.ensure_future(
        _backends(rt, site, db_pw, db_new, redis_pw, redis_new)))
    cfg = rt.config
    keys = await _site_keys(rt, site, old)
    secrets = SiteSecrets(
        db_dsn=site_dsn(site, db_pw, cfg.pg_site_host or rt.pg_target.host, rt.pg_target.port),
        redis_url=site_url(site, redis_pw, rt.redis_target, cfg.redis_site_host),
        session_secret=keys.session_secret,
        data_key=keys.data_key,
        hq_api_token=sitecreds.choose_token(
            old.hq_api_token, await _credential(rt, site), rotation)[0],
    )
    return secrets, skip, error


async def _backends(rt: Runtime, site: str, db_pw: str, db_new: bool, redis_pw: str,
                    redis_new: bool) -> tuple[set[str], str | None]:
    skip: set[str] = set()
    error: str | None = None
    async with rt.site(site).backend_lock:
        try:
            await rt.postgres.ensure(site, db_pw, set_password=db_new)
        except DatabaseUnavailable as exc:
            error = str(exc)
            if db_new:
                # A password PostgreSQL never accepted must not become the Secret's truth.
                skip.add(DB_SECRET)
        try:
            await rt.redis.ensure(site, redis_pw)
        except RedisUnavailable as exc:
            error = f"{error}; {exc}" if error else str(exc)
            if redis_new:
                skip.add(REDIS_SECRET)
    return skip, error


async def _site_keys(rt: Runtime, site: str, old: credentials.Existing) -> keyvault.SiteKeys:
    """The site's keys: from its Secret, else from the operator's copy, else new — and
    the copy exists before a new key is ever handed to the storefront."""
    ns = rt.config.namespace
    if old.session_secret and old.data_key:
        keys = keyvault.SiteKeys(old.session_secret, old.data_key)
        if not rt.site(site).keys_backed_up:
            if await keyvault.load(rt.kube, ns, site) is None:
                await keyvault.store(rt.kube, ns, site, keys)
            rt.site(site).keys_backed_up = True
        return keys
    saved = await keyvault.load(rt.kube, ns, site)
    if saved is None:
        saved = await keyvault.store(rt.kube, ns, site, keyvault.SiteKeys(
            credentials.new_session_secret(), credentials.new_data_key()))
    rt.site(site).keys_backed_up = True
    return saved


async def _credential(rt: Runtime, site: str) -> SiteCredential | None:
    """The site's published registry entry: kept in memory, read from the API again once
    per resync period."""
    state = rt.site(site)
    # Re-read once per resync period: an entry a person deleted is published again.
    if time.monotonic() - state.credential_loaded_at > rt.config.resync_seconds:
        state.credential = await sitecreds.load(rt.kube, rt.config.namespace, site)
        state.credential_loaded_at = time.monotonic()
    return state.credential


async def _publish_credential(rt: Runtime, entry: SiteCredential) -> None:
    state = rt.site(entry.site)
    if state.credential == entry:
        return  # nothing changed: no write
    await sitecreds.publish(rt.kube, rt.config.namespace, entry)
    if state.credential is None or state.credential.sha256 != entry.sha256:
        log.info("SubSite %s: HQ API credential published", entry.site)
    elif state.credential.state != entry.state:
        log.info("SubSite %s: HQ API credential %s", entry.site, entry.state)
    state.credential = entry


async def _previous_claims(rt: Runtime, namespace: str, fresh_ns: str | None
                           ) -> LicenseClaims | None:
    """Claims of the token the site's license Secret holds now (None: none or unreadable):
    the base the next sequence number grows from."""
    obj = await _live(rt, _secret_probe(LICENSE_SECRET, namespace), fresh_ns)
    token = unb64(((obj or {}).get("data") or {}).get(LICENSE_TOKEN.key))
    if not token:
        return None
    try:
        return verify_token(token, rt.keys.signing_key.public_key())
    except TokenError:
        return None


async def _write_status(rt: Runtime, body: dict[str, Any], new: dict[str, Any]) -> None:
    name = body["metadata"]["name"]
    site = rt.site(name)
    old = site.last_status or body.get("status") or {}
    if new == old or new == body.get("status"):
        site.last_status = new
        return
    await rt.kube.merge_patch(path_for(API_VERSION, SUBSITE.kind, name, subresource="status"),
                              {"status": new}, kind=SUBSITE.kind)
    site.last_status = new
    for type_, reason, message in status.transitions(old, new):
        await events.post(rt.kube, body, type_, reason, message)


def apply_waves(children: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The apply order: the Namespace (everything else lives in it), then all that the
    Deployment mounts and the rest at once, the Deployment last, so a new pod never
    starts against missing volumes."""
    first = [o for o in children if o["kind"] == "Namespace"]
    last = [o for o in children if o["kind"] == "Deployment"]
    rest = [o for o in children if o["kind"] not in ("Namespace", "Deployment")]
    return [w for w in (first, rest, last) if w]


async def reconcile(rt: Runtime, body: dict[str, Any],
                    license_entry: tuple[Any, ...] | None,
                    rolepolicy: dict[str, Any] | None) -> float:
    """Reconcile once; return seconds until the next unprompted run."""
    started = time.monotonic()
    md = body["metadata"]
    name, generation = md["name"], int(md.get("generation", 1))
    now = datetime.now(UTC)
    metrics.RECONCILES.inc()
    # Before any await: the watch event of our own status write must find it set.
    site = rt.site(name)
    site.seen_generation = generation
    namespace = namespace_name(name)
    url = ""
    db_ready, db_message = False, "not provisioned"
    replicas = 0
    transient: str | None = None
    problem: tuple[str, str] | None = None
    try:
        spec = SubSiteSpec.model_validate(body.get("spec") or {})
        lic_spec = LicenseSpec.model_validate(license_entry[1]) if license_entry else None
        rp = RolePolicySpec.model_validate(rolepolicy) if rolepolicy else None
    except ValidationError as exc:
        # The CRD schema should make this impossible; if it happens anyway (schema and
        # models out of step), say so in status rather than stall silently.
        metrics.RECONCILE_ERRORS.labels(reason=c.R_INVALID_SPEC).inc()
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
        message = f"SubSite, License or RolePolicy does not match the operator's model: {fields}"
        log.warning("SubSite %s: %s", name, message)
        verdict = LicenseVerdict(False, c.R_INVALID_SPEC, message)
        problem = (c.R_INVALID_SPEC, message)
        spec = None
    else:
        # The token's sequence is set when it is signed (`token_for`), never from the
        # License's generation, which restarts when a License is re-created.
        holds = license_entry[2] if license_entry and len(license_entry) > 2 else ()
        verdict = verdict_for(name, spec.license_ref, lic_spec, 0, now, holds)
        problem = _problem(spec, rp)
        replicas = spec.storefront.replicas
        ctx = SiteContext(
            name=name, uid=md["uid"], spec=spec,
            license=lic_spec if verdict.claims is not None else None,
            role_policy=rp, mode=verdict.mode, platform=rt.platform, now=now,
        )
        url = ctx.url
        db_message = "not provisioned yet"
        try:
            site.annotations_seen = acted = acted_on_annotations(md)
            db_ready, db_message, transient = await _converge(
                rt, ctx, verdict, namespace, acted.get(ROTATE_CREDENTIALS_ANNOTATION, ""),
                acted.get(SHOP_URL_ANNOTATION, ""))
        except KubeError as exc:
            transient = f"applying children failed: {exc}"
        if transient:
            metrics.RECONCILE_ERRORS.labels(reason="Transient").inc()
            log.warning("SubSite %s: %s", name, transient)

    obs = status.Observation(
        generation=generation, namespace=namespace, url=url, license=verdict,
        database_ready=db_ready, database_message=db_message,
        deployment=rt.cache.get(("Deployment", namespace, "storefront")) if spec else None,
        desired_replicas=replicas,
        problem=problem[1] if problem else None,
        problem_reason=problem[0] if problem else c.R_INVALID_SPEC,
        transient_error=transient, now=now,
    )
    new_status = status.compute(obs, body.get("status"))
    try:
        await _write_status(rt, body, new_status)
    except KubeError as exc:
        if spec is None:
            log.warning("SubSite %s: status update failed: %s", name, exc)
        transient = transient or f"status update failed: {exc}"
    if spec is None:
        return rt.config.resync_seconds
    rt.set_phase(name, new_status["phase"])
    metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    if transient:
        site.failures += 1
        return min(MAX_BACKOFF, 2.0 ** (site.failures - 1))
    site.failures = 0
    delay = _jitter(rt.config.resync_seconds, rt.config.resync_jitter)
    if new_status["phase"] != c.PHASE_READY:
        delay = min(delay, NOT_READY_RECHECK)
    if verdict.next_change is not None:
        delay = min(delay, max(1.0, (verdict.next_change - now).total_seconds() + 1))
    return delay


async def _converge(rt: Runtime, ctx: SiteContext, verdict: LicenseVerdict, namespace: str,
                    rotation: str = "", shop_url: str = "") -> tuple[bool, str, str | None]:
    """Namespace, backends, then every child that differs. Returns (database ready,
    database message, transient error)."""
    ns_obj = namespace_of(ctx)
    fresh = await _live(rt, ns_obj) is None
    await _apply_if_changed(rt, ns_obj)
    fresh_ns = namespace if fresh else None
    secrets, skip, transient = await _provision(rt, ctx.name, namespace, fresh, rotation)
    db_ready = transient is None
    db_message = "database, role and Redis user provisioned" if db_ready else str(transient)
    previous = await _previous_claims(rt, namespace, fresh_ns)
    secrets = replace(secrets, license_token=token_for(verdict, rt.keys.signing_key, previous,
                                                       ctx.now))
    published = await _credential(rt, ctx.name)
    entry = sitecreds.desired_entry(
        ctx.name, secrets.hq_api_token, published,
        "suspended" if verdict.mode == "suspended" else "active", rotation,
        sitecreds.registered_urls(ctx.url, shop_url), ctx.now)
    known_token = published is not None and published.sha256 == entry.sha256
    if known_token:
        # Same token: a suspension (or a new URL) reaches HQ before anything else is done.
        await _publish_credential(rt, entry)
    children = [o for o in build_children(replace(ctx, secrets=secrets))
                if not (o["kind"] == "Secret" and o["metadata"]["name"] in skip)]
    try:
        for wave in apply_waves(children):
            await asyncio.gather(*(_apply_if_changed(rt, o, fresh_ns) for o in wave))
        await _prune_members(rt, ctx.name, children)
    except KubeError as exc:
        transient = f"applying children failed: {exc}"
    else:
        if not known_token:
            # A new token: published only once the site's Secret holds it, so HQ never
            # knows a token the site does not have (a rotation ends the old one here).
            await _publish_credential(rt, entry)
    return db_ready, db_message, transient
