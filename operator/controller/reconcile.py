"""One idempotent reconcile of one SubSite: observe, provision, apply what differs,
report. Safe to interrupt at any point: every step converges when run again."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kameng.api import conditions as c
from kameng.api.common import API_VERSION
from kameng.api.kinds import (
    ACTED_ON_ANNOTATIONS,
    APPROVED_CHANGE_ANNOTATION,
    ROTATE_CREDENTIALS_ANNOTATION,
    SHOP_URL_ANNOTATION,
)
from kameng.api.license import LicenseSpec
from kameng.api.resources import SUBSITE
from kameng.api.rolepolicy import RolePolicySpec
from kameng.api.subsite import SubSiteSpec
from kameng.children.build import build_children
from kameng.children.context import SiteContext, SiteSecrets, namespace_name
from kameng.children.namespace import db_connection_limit, namespace_ownership
from kameng.children.namespace import namespace as namespace_of
from kameng.children.rbac import MEMBER_PREFIX
from kameng.children.secrets import unb64
from kameng.contracts.hq_auth import REGISTRY_SECRET, SiteCredential
from kameng.contracts.license_token import LicenseClaims, TokenError, verify_token
from kameng.contracts.pod import DB_SECRET, KEYS_SECRET, LICENSE_SECRET, LICENSE_TOKEN, REDIS_SECRET
from kameng.kube import events
from kameng.kube.cache import key_of
from kameng.kube.client import KubeError, path_for, path_of
from kameng.kube.drift import first_difference, foreign_fields, needs_apply, with_hash
from kameng.licensing.verdict import LicenseVerdict, token_for, verdict_for
from kameng.provision.ownership import Claim, NotOurs, judge
from kameng.provision.postgres import DatabaseUnavailable, site_dsn
from kameng.provision.redis_acl import RedisUnavailable, site_url
from kameng.provision.servers import Server

from . import credentials, domains, keyvault, metrics, placement, sitecreds, status
from .plan_rights import plan_problem
from .runtime import Runtime

log = logging.getLogger(__name__)
NOT_READY_RECHECK = 30.0
MAX_BACKOFF = 60.0
# After a failure, wake-ups are ignored this long: a rollout's stream of events must not
# turn a backoff into a retry storm against a server that is down.
MIN_RETRY_PAUSE = 2.0


# A SubSite and its License usually arrive together (one `kubectl apply`, one Argo CD
# sync). When the SubSite's event comes first, a reconcile without the License builds the
# whole site unlicensed and rebuilds it a moment later: the license Secret, the HQ entry,
# the ConfigMap, the Deployment, a status and a Warning — 13 % of a 100-site batch paid
# that. So a new SubSite (no status yet) waits this long after its creation for its
# License to be seen before the first reconcile; a License that never comes is reported
# as before, this much later.
NEW_LICENSE_WAIT = 3.0


def license_wait(body: Mapping[str, Any], license_entry: Any, now: datetime) -> float:
    """Seconds the first reconcile of ``body`` should wait for its License (0: none)."""
    if license_entry is not None or body.get("status"):
        return 0.0
    created = str((body.get("metadata") or {}).get("creationTimestamp") or "")
    try:
        age = (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return 0.0
    # Bounded either way: a clock skew between here and the API server never makes the
    # wait longer than NEW_LICENSE_WAIT.
    return min(NEW_LICENSE_WAIT, max(0.0, NEW_LICENSE_WAIT - age))


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
                            fresh_namespace: str | None = None,
                            owner: dict[str, Any] | None = None) -> bool:
    desired = with_hash(obj)
    live = await _live(rt, obj, fresh_namespace)
    foreign = foreign_fields(desired, live) if live is not None else []
    if foreign:
        # Server-side apply keeps fields other managers own (an init container someone
        # added, an extra volume...): only a full replace of what we own removes them.
        md = live["metadata"]  # type: ignore[index]
        body = {**desired, "metadata": {**desired["metadata"],
                                        "resourceVersion": md["resourceVersion"]}}
        rt.cache.put(await rt.kube.replace(path_of(obj), body))
        metrics.CHILDREN_APPLIED.labels(kind=obj["kind"]).inc()
        message = (f"{obj['kind']} {md.get('namespace')}/{md['name']}: removed changes the "
                   f"operator did not make: {', '.join(foreign)[:600]}")
        log.warning("%s", message)
        if owner is not None:
            await events.post(rt.kube, owner, "Warning", c.R_FOREIGN_DRIFT, message)
        return True
    if not needs_apply(desired, live):
        return False
    if live is not None and log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s/%s applied again: %s", obj["kind"], obj["metadata"].get("namespace"),
                  obj["metadata"]["name"], first_difference(desired, live))
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


# Children whose content follows from the site's RolePolicy (the config's roles, the
# Deployment's checksum of it, members' Kubernetes access).
_ROLE_DEPENDENT = frozenset({"ConfigMap", "Deployment", "Role", "RoleBinding"})


def acted_on_annotations(meta: Any) -> dict[str, str]:
    """The SubSite's annotations the reconcile acts on (absent ones left out)."""
    annotations = meta.get("annotations") or {}
    return {k: str(annotations[k]) for k in ACTED_ON_ANNOTATIONS if annotations.get(k)}


def _secret_probe(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}}


async def _provision(rt: Runtime, site: str, namespace: str, fresh: bool, claim: Claim,
                     connection_limit: int, rotation: str, server: Server
                     ) -> tuple[SiteSecrets, set[str], str | None]:
    """Database role/db, Redis user and the site's HQ API token. Returns the secrets, the
    names of Secrets that must NOT be applied this round, and a transient error message;
    raises :class:`NotOurs` (before creating anything) when a name is taken by something
    this SubSite did not create."""
    # Independent reads at once (each is a round trip when not cached).
    names = (DB_SECRET, REDIS_SECRET, KEYS_SECRET)
    *secrets_found, saved_keys, published = await asyncio.gather(
        *(_live(rt, _secret_probe(n, namespace), namespace if fresh else None) for n in names),
        _check_keys_copy(rt, site, claim), _credential(rt, site))
    found = dict(zip(names, secrets_found, strict=True))
    old = credentials.read_existing(found)
    db_pw, db_new = credentials.or_new(old.db_password)
    redis_pw, redis_new = credentials.or_new(old.redis_password)
    # Shielded: if the loop is cancelled (the SubSite is being deleted), provisioning
    # still finishes under the lock, and the reclaim that waits for the lock then drops
    # what it created.
    skip, error = await asyncio.shield(asyncio.ensure_future(
        _backends(rt, site, claim, connection_limit, db_pw, db_new, redis_pw, redis_new,
                  server.name)))
    cfg = rt.config
    keys = await _site_keys(rt, site, old, claim, saved_keys)
    secrets = SiteSecrets(
        db_dsn=site_dsn(site, db_pw, server.site_host, server.site_port),
        redis_url=site_url(site, redis_pw, rt.redis_target, cfg.redis_site_host),
        session_secret=keys.session_secret,
        data_key=keys.data_key,
        hq_api_token=sitecreds.choose_token(old.hq_api_token, published, rotation)[0],
    )
    return secrets, skip, error


async def _backends(rt: Runtime, site: str, claim: Claim, connection_limit: int,
                    db_pw: str, db_new: bool, redis_pw: str, redis_new: bool, server: str
                    ) -> tuple[set[str], str | None]:
    skip: set[str] = set()
    error: str | None = None
    state = rt.site(site)
    async with state.backend_lock:
        if claim.uid in rt.reclaimed:  # deleted meanwhile: create nothing reclaim misses
            return {DB_SECRET, REDIS_SECRET}, "the SubSite is being deleted"
        # Provisioned already by this process with exactly these inputs: not checked again
        # until the resync period has passed. Every wake of the site (each event of each
        # child) ran the checks — a PostgreSQL session and several statements — and at
        # 1,000 sites they queued the reconciles behind them. A check between resyncs
        # found nothing new anyway: nothing in PostgreSQL or Redis wakes a site.
        digest = _backend_digest(claim, connection_limit, db_pw, redis_pw, server)
        if not (db_new or redis_new) and state.backends_ok is not None \
                and state.backends_ok[0] == digest \
                and time.monotonic() - state.backends_ok[1] < rt.config.resync_seconds:
            return skip, None
        state.backends_ok = None
        metrics.BACKEND_CHECKS.inc()
        try:
            await rt.postgres.ensure(site, claim, db_pw, set_password=db_new,
                                     connection_limit=connection_limit, server=server)
        except DatabaseUnavailable as exc:
            error = str(exc)
            if db_new:
                # A password PostgreSQL never accepted must not become the Secret's truth.
                skip.add(DB_SECRET)
        # After PostgreSQL, not beside it: a database name taken by someone else stops
        # the reconcile (NotOurs) before a Redis user is created for the site.
        try:
            await rt.redis.ensure(site, claim, redis_pw)
        except RedisUnavailable as exc:
            error = f"{error}; {exc}" if error else str(exc)
            if redis_new:
                skip.add(REDIS_SECRET)
        if error is None:
            state.backends_ok = (digest, time.monotonic())
    return skip, error


def _backend_digest(claim: Claim, connection_limit: int, db_pw: str, redis_pw: str,
                    server: str) -> str:
    """One value for everything the backends were provisioned from (a digest: the
    passwords are not kept a second time in memory)."""
    text = "\0".join((claim.uid, claim.adopt_from or "", str(claim.adopt_unmarked),
                      str(connection_limit), db_pw, redis_pw, server))
    return hashlib.sha256(text.encode()).hexdigest()


async def _check_keys_copy(rt: Runtime, site: str, claim: Claim) -> keyvault.SiteKeys | None:
    """The operator's copy of the site's keys, if this SubSite may use it (raises
    :class:`NotOurs` for another SubSite's copy: it decrypts that site's data)."""
    if rt.site(site).keys_backed_up:
        return None  # checked (or made) by this process for this SubSite already
    saved = await keyvault.load(rt.kube, rt.config.namespace, site)
    if saved is not None:
        judge(f"Secret {rt.config.namespace}/{keyvault.backup_name(site)} (the copy of the "
              "site's data-encryption key)", True, saved.owner, claim)
    return saved


async def _site_keys(rt: Runtime, site: str, old: credentials.Existing, claim: Claim,
                     saved: keyvault.SiteKeys | None) -> keyvault.SiteKeys:
    """The site's keys: from its Secret, else from the operator's copy, else new — and
    the copy exists before a new key is ever handed to the storefront."""
    ns = rt.config.namespace
    if saved is not None and saved.owner != claim.uid:
        await keyvault.mark(rt.kube, ns, site, claim.uid)  # adopted (judged before)
    if old.session_secret and old.data_key:
        keys = keyvault.SiteKeys(old.session_secret, old.data_key)
        if not rt.site(site).keys_backed_up:
            if saved is None:
                await keyvault.store(rt.kube, ns, site, keys, claim.uid)
            rt.site(site).keys_backed_up = True
        return keys
    if saved is None:
        saved = await keyvault.store(rt.kube, ns, site, keyvault.SiteKeys(
            credentials.new_session_secret(), credentials.new_data_key()), claim.uid)
    rt.site(site).keys_backed_up = True
    return saved


async def _credential(rt: Runtime, site: str) -> SiteCredential | None:
    """The site's published registry entry: kept in memory, read from the API again once
    per resync period."""
    state = rt.site(site)
    # Re-read once per resync period: an entry a person deleted is published again.
    if time.monotonic() - state.credential_loaded_at > rt.config.resync_seconds:
        # The registry Secret is one of the operator's own (watched, so cached): read
        # there. A GET per new site returned the whole registry — an entry per site — so
        # a batch of N sites read O(N²) bytes (~180 MB at 1,000). Not cached yet (the
        # first site, or the watch still listing): read from the API.
        cached = rt.cache.get(("Secret", rt.config.namespace, REGISTRY_SECRET))
        state.credential = sitecreds.entry_of(cached, site) if cached is not None else \
            await sitecreds.load(rt.kube, rt.config.namespace, site)
        state.credential_loaded_at = time.monotonic()
    return state.credential


async def _publish_credential(rt: Runtime, entry: SiteCredential) -> None:
    state = rt.site(entry.site)
    if state.credential == entry:
        return  # nothing changed: no write
    await rt.registry.publish(entry)
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


async def _write_status(rt: Runtime, body: dict[str, Any], new: dict[str, Any],
                        approvals: tuple[str, ...] = ()) -> None:
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
    for type_, reason, message in status.change_events(old, new, approvals):
        await events.post(rt.kube, body, type_, reason, message)


def apply_waves(children: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The apply order: the Namespace (everything else lives in it), then all that the
    Deployment mounts and the rest at once, the Deployment last, so a new pod never
    starts against missing volumes."""
    first = [o for o in children if o["kind"] == "Namespace"]
    last = [o for o in children if o["kind"] == "Deployment"]
    rest = [o for o in children if o["kind"] not in ("Namespace", "Deployment")]
    return [w for w in (first, rest, last) if w]


def being_deleted(rt: Runtime, body: dict[str, Any]) -> bool:
    md = body["metadata"]
    return bool(md.get("deletionTimestamp")) or md.get("uid") in rt.reclaimed


async def reconcile(rt: Runtime, body: dict[str, Any],
                    license_entry: tuple[Any, ...] | None,
                    rolepolicy: dict[str, Any] | None,
                    domain_claims: list[domains.DomainClaim] | None = None,
                    placements: Mapping[str, str] | None = None) -> float:
    """Reconcile once; return seconds until the next unprompted run.

    Never once the SubSite's deletion has begun: a reconcile that re-created what the
    reclaim removed would leave an orphaned database. The reclaim marks the SubSite and
    then waits on the same lock, so a reconcile in flight finishes first and every later
    one returns here without doing anything."""
    if being_deleted(rt, body):
        return rt.config.resync_seconds
    async with rt.site(body["metadata"]["name"]).reconcile_lock:
        if being_deleted(rt, body):
            return rt.config.resync_seconds
        return await _reconcile(rt, body, license_entry, rolepolicy, domain_claims or [],
                                placements or {})


async def _reconcile(rt: Runtime, body: dict[str, Any],
                     license_entry: tuple[Any, ...] | None,
                     rolepolicy: dict[str, Any] | None,
                     domain_claims: list[domains.DomainClaim],
                     placements: Mapping[str, str]) -> float:
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
        ended = license_entry[3] if license_entry and len(license_entry) > 3 else None
        verdict = verdict_for(name, spec.license_ref, lic_spec, 0, now, holds, ended)
        problem = _problem(spec, rp) or plan_problem(spec, spec.license_ref, lic_spec)
        replicas = spec.storefront.replicas
        ctx = SiteContext(
            name=name, uid=md["uid"], spec=spec,
            license=lic_spec if verdict.claims is not None else None,
            role_policy=rp, mode=verdict.mode, platform=rt.platform, now=now,
        )
        url = ctx.url
        db_message = "not provisioned yet"
        holder = domains.holder(domain_claims, name, md.get("uid", ""))
        if holder is None:
            rt.domain_waiting.discard(name)
        else:
            rt.domain_waiting.add(name)
        try:
            site.annotations_seen = acted = acted_on_annotations(md)
            db_ready, db_message, transient = await _converge(
                rt, ctx, verdict, namespace, body, holder,
                acted.get(ROTATE_CREDENTIALS_ANNOTATION, ""), acted.get(SHOP_URL_ANNOTATION, ""),
                placements)
        except NotOurs as exc:
            # Nothing was created: say exactly what is in the way, once per change.
            problem = (exc.reason, str(exc))
            db_message = str(exc)
            if site.conflict != str(exc):
                await events.post(rt.kube, body, "Warning", exc.reason, str(exc))
                site.conflict = str(exc)
        except KubeError as exc:
            transient = f"applying children failed: {exc}"
        else:
            site.conflict = None
            if holder is not None and problem is None:
                problem = (c.R_DOMAIN_CONFLICT, domains.conflict_message(spec.domain, holder))
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
        spec=body.get("spec") if spec is not None else None,
        approved_change=(md.get("annotations") or {}).get(APPROVED_CHANGE_ANNOTATION, ""),
        database_server=rt.postgres.placed.get(name),
    )
    new_status = status.compute(obs, body.get("status"))
    try:
        await _write_status(rt, body, new_status,
                            tuple((rolepolicy or {}).get("approvals") or ()))
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


async def _placed(rt: Runtime, ctx: SiteContext, body: dict[str, Any], namespace: str,
                  fresh: bool, claim: Claim, placements: Mapping[str, str]
                  ) -> tuple[Server, SiteContext, str | None]:
    """The site's PostgreSQL server, recorded before anything is provisioned there, and
    a requested move carried out. Returns the server, the context to build from (no
    storefront pods while a move waits for them to stop) and, while a move is under way,
    what it waits for. Raises :class:`NotOurs` when the site cannot be placed."""
    name = ctx.name
    site = rt.site(name)
    db_secret = None if fresh else await _live(rt, _secret_probe(DB_SECRET, namespace))
    location = credentials.db_location(db_secret)
    decision = placement.decide(rt, body, ctx.spec.database.server_selector, location,
                                placements)
    if decision.problem is not None or decision.server is None:
        raise NotOurs(c.R_NO_DATABASE_SERVER, decision.problem or "no PostgreSQL server")
    # Taken before the first await: sites placed concurrently count each other (all of a
    # batch went to one server, past its capacity, when this came after the write).
    rt.postgres.placed[name] = decision.server
    if decision.warning != site.placement_warning:
        site.placement_warning = decision.warning
        if decision.warning:
            log.warning("SubSite %s: %s", name, decision.warning)
            await events.post(rt.kube, body, "Warning", c.R_PLACEMENT_CONFLICT,
                              decision.warning)
    current = decision.server
    if decision.move_done or (decision.annotate and placement.needs_annotation(rt)):
        await placement.record(rt, name, current, move_done=decision.move_done)
    rt.postgres.placed[name] = current
    target = decision.move_to
    if target is None:
        return rt.postgres.servers[current], ctx, None
    password = credentials.read_existing({DB_SECRET: db_secret}).db_password
    if password is None:  # nothing was ever provisioned: nothing to copy
        await placement.record(rt, name, target, move_done=True)
        return rt.postgres.servers[target], ctx, None
    dep = rt.cache.get(("Deployment", namespace, "storefront"))
    stopped = dep is None or (
        int((dep.get("spec") or {}).get("replicas", 1) or 0) == 0
        and int((dep.get("status") or {}).get("replicas", 0) or 0) == 0)
    if not stopped:
        # The storefront stops first: nothing may write to the old copy during the copy.
        quiet = replace(ctx, spec=ctx.spec.model_copy(update={
            "storefront": ctx.spec.storefront.model_copy(update={"replicas": 0})}))
        return rt.postgres.servers[current], quiet, (
            f"moving the database from {current} to {target}: waiting for the storefront "
            "pods to stop")
    await events.post(rt.kube, body, "Normal", c.R_DATABASE_MOVING,
                      f"moving the database from {current} to {target}")
    try:
        await placement.move(rt, name, claim, password, db_connection_limit(ctx), current,
                             target)
    except placement.MoveError as exc:
        raise KubeError(0, "DatabaseMoveFailed", str(exc)) from None
    await placement.record(rt, name, target, move_done=True)
    await events.post(rt.kube, body, "Normal", c.R_DATABASE_MOVED,
                      f"database moved from {current} to {target}; the old copy on "
                      f"{current} is kept with its role locked: drop it when satisfied")
    return rt.postgres.servers[target], ctx, None


async def _converge(rt: Runtime, ctx: SiteContext, verdict: LicenseVerdict, namespace: str,
                    body: dict[str, Any], domain_holder: domains.DomainClaim | None,
                    rotation: str = "", shop_url: str = "",
                    placements: Mapping[str, str] | None = None
                    ) -> tuple[bool, str, str | None]:
    """Namespace, backends, then every child that differs. Returns (database ready,
    database message, transient error); raises :class:`NotOurs` before writing anything
    when the namespace, database, role, Redis user or key copy belongs to someone else."""
    ns_obj = namespace_of(ctx)
    live_ns = await _live(rt, ns_obj)
    owned = namespace_ownership(live_ns, ctx.uid)
    if owned == "terminating":
        return False, "not provisioned", (f"namespace {namespace} of an earlier SubSite "
                                          "named the same is still terminating")
    if owned == "foreign":
        raise NotOurs(c.R_NAME_CONFLICT,
                      f"namespace {namespace} already exists and was not created by the "
                      "kameng operator for this SubSite; the operator will not adopt, "
                      "change or delete it. Rename the SubSite, or remove that namespace")
    fresh = live_ns is None
    claim = Claim(uid=ctx.uid, adopt_from=ctx.spec.database.adopt_retained_from,
                  adopt_unmarked=owned == "legacy")
    server, ctx, waiting = await _placed(rt, ctx, body, namespace, fresh, claim, placements)
    if waiting is not None:
        db_message = waiting
    secrets, skip, transient = await _provision(rt, ctx.name, namespace, fresh, claim,
                                                db_connection_limit(ctx), rotation, server)
    if claim.uid in rt.reclaimed:
        return False, "the SubSite is being deleted", "the SubSite is being deleted"
    await _apply_if_changed(rt, ns_obj)
    fresh_ns = namespace if fresh else None
    db_ready = transient is None and waiting is None
    db_message = waiting or ("database, role and Redis user provisioned" if db_ready
                             else str(transient))
    previous = await _previous_claims(rt, namespace, fresh_ns)
    secrets = replace(secrets, license_token=token_for(verdict, rt.keys.signing_key, previous,
                                                       ctx.now))
    published = await _credential(rt, ctx.name)
    entry = sitecreds.desired_entry(
        ctx.name, secrets.hq_api_token, published,
        "suspended" if verdict.mode == "suspended" else "active", rotation,
        sitecreds.registered_urls(ctx.url, shop_url), ctx.now,
        scope=(verdict.claims.categories, verdict.claims.regions)
        if verdict.claims is not None else None)
    known_token = published is not None and published.sha256 == entry.sha256
    if known_token:
        # Same token: a suspension (or a new URL) reaches HQ before anything else is done.
        await _publish_credential(rt, entry)
    children = [o for o in build_children(replace(
        ctx, secrets=secrets, platform=replace(ctx.platform, postgres_host=server.site_host,
                                               postgres_port=server.site_port)))
                if not (o["kind"] == "Secret" and o["metadata"]["name"] in skip)
                and not (o["kind"] == "Ingress" and domain_holder is not None)]
    if ctx.role_policy is None:
        # Without its RolePolicy (deleted, or not seen yet by a restarted operator) the
        # site's roles are unknown, not empty: keep what was applied rather than roll out
        # a config that strips every member of every permission.
        children = [o for o in children if o["kind"] not in _ROLE_DEPENDENT]
    try:
        for wave in apply_waves(children):
            if claim.uid in rt.reclaimed:
                return False, db_message, "the SubSite is being deleted"
            await asyncio.gather(*(_apply_if_changed(rt, o, fresh_ns, body) for o in wave))
        if ctx.role_policy is not None:
            await _prune_members(rt, ctx.name, children)
        if domain_holder is not None:
            await _drop_ingress(rt, ctx.name, namespace)
    except KubeError as exc:
        transient = f"applying children failed: {exc}"
    else:
        if not known_token:
            # A new token: published only once the site's Secret holds it, so HQ never
            # knows a token the site does not have (a rotation ends the old one here).
            await _publish_credential(rt, entry)
    return db_ready, db_message, transient


async def _drop_ingress(rt: Runtime, site: str, namespace: str) -> None:
    """A site that does not hold its domain serves no traffic for it."""
    for obj in [o for o in rt.cache.of_site(site, {"Ingress"})
                if o["metadata"].get("namespace") == namespace]:
        await rt.kube.delete(path_of(obj), kind="Ingress")
        rt.cache.remove(key_of(obj))
