"""`kubectl kameng`: status, suspend, resume, renew, export, invite, rotate-credentials,
release, risk backtest, export-data, terminate, approvals, approve, reject.

kubectl finds this as the `kubectl-kameng` executable on PATH. Each verb is a single
patch of the License or a read, so what it does is visible in the audit log and in
GitOps diffs exactly as if a person had edited the YAML. `invite` writes nothing: it
reads the site's key copy in the operator's namespace (so it needs HQ's rights there)
and prints one-time set-password links.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import yaml

from kameng.api.common import GROUP, VERSION
from kameng.api.conditions import READY, RECONCILING, STALLED, find
from kameng.api.holds import HOLD_KINDS, HOLD_PREFIX, holds_of
from kameng.api.kinds import ROTATE_CREDENTIALS_ANNOTATION
from kameng.api.resources import KINDS, LICENSE, ROLEPOLICY, SUBSITE
from kameng.contracts import invitation
from kameng.controller import keyvault
from kameng.licensing.lifecycle import not_renewable
from kameng.licensing.term import (
    Term,
    format_time,
    parse_duration,
    parse_time,
    renewal_of_spec,
)

_SINGULAR = {k.plural: k.singular for k in KINDS}


class PluginError(Exception):
    pass


class Api:
    """The few calls the plugin needs, over the official client."""

    def __init__(self, context: str | None) -> None:
        from kubernetes import client, config

        config.load_kube_config(context=context)
        self.co = client.CustomObjectsApi()
        self.core = client.CoreV1Api()
        self._exc = client.ApiException

    def get(self, plural: str, name: str) -> dict[str, Any]:
        try:
            return self.co.get_cluster_custom_object(GROUP, VERSION, plural, name)
        except self._exc as e:
            if e.status == 404:
                raise PluginError(f"{_SINGULAR[plural]} {name!r} not found") from None
            raise

    def list(self, plural: str) -> list[dict[str, Any]]:
        return self.co.list_cluster_custom_object(GROUP, VERSION, plural)["items"]

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.co.patch_cluster_custom_object(GROUP, VERSION, plural, name, body)

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        try:
            data = self.core.read_namespaced_secret(name, namespace).data or {}
        except self._exc as e:
            if e.status == 404:
                raise PluginError(f"Secret {namespace}/{name} not found") from None
            if e.status == 403:
                raise PluginError(f"reading Secret {namespace}/{name} is forbidden: this "
                                  "needs HQ's rights (get secrets in the operator's "
                                  "namespace)") from None
            raise
        return {k: base64.b64decode(v).decode() for k, v in data.items()}


def license_of(api: Api, site: str) -> dict[str, Any]:
    ss = api.get(SUBSITE.plural, site)
    return api.get(LICENSE.plural, ss["spec"]["licenseRef"])


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return find(obj.get("status", {}).get("conditions"), type_) or {}


def _is_problem(c: dict[str, Any]) -> bool:
    # kstatus: Reconciling and Stalled are "abnormal-true" conditions; the rest are
    # healthy when True.
    if c.get("type") in (RECONCILING, STALLED):
        return c.get("status") == "True"
    return c.get("status") != "True"


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    sites = [api.get(SUBSITE.plural, args.site)] if args.site else api.list(SUBSITE.plural)
    licenses = {lic["metadata"]["name"]: lic for lic in api.list(LICENSE.plural)}
    rows = [("NAME", "PHASE", "READY", "LICENSE", "STATE", "EXPIRES", "URL", "PROBLEM")]
    for ss in sorted(sites, key=lambda o: o["metadata"]["name"]):
        st = ss.get("status", {})
        lic = licenses.get(ss["spec"]["licenseRef"], {})
        lst = lic.get("status", {})
        problems = [f"{c['type']}: {c.get('message') or c.get('reason')}"
                    for c in st.get("conditions", []) if _is_problem(c)]
        if lic.get("spec", {}).get("suspended"):
            problems.insert(0, f"suspended: {lic['spec'].get('suspendReason') or 'no reason'}")
        for h in holds_of(lic.get("metadata", {}).get("annotations")):
            problems.insert(0, f"held ({h.kind}): {h.reason or 'no reason'}")
        rows.append((ss["metadata"]["name"], st.get("phase", "-"),
                     _cond(ss, READY).get("status", "-"), ss["spec"]["licenseRef"],
                     lst.get("state", "-"), lst.get("expiresAt", lic.get("spec", {})
                                                    .get("term", {}).get("end", "-")),
                     st.get("url", "-"), "; ".join(problems) or "-"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("   ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=False)) + "   " + r[-1])
    return 0


def cmd_suspend(api: Api, args: argparse.Namespace) -> int:
    lic = license_of(api, args.site)
    api.patch(LICENSE.plural, lic["metadata"]["name"],
              {"spec": {"suspended": True, "suspendReason": args.reason}})
    print(f"license.{GROUP}/{lic['metadata']['name']} suspended ({args.reason}); "
          f"sub-site {args.site} stops taking orders")
    return 0


def cmd_resume(api: Api, args: argparse.Namespace) -> int:
    lic = license_of(api, args.site)
    api.patch(LICENSE.plural, lic["metadata"]["name"],
              {"spec": {"suspended": False, "suspendReason": None}})
    print(f"license.{GROUP}/{lic['metadata']['name']} resumed; sub-site {args.site} restored")
    return 0


def cmd_renew(api: Api, args: argparse.Namespace) -> int:
    lic = license_of(api, args.site)
    if why := not_renewable(lic):
        raise PluginError(why)
    spec = lic["spec"]
    term = Term(parse_time(spec["term"]["start"]), parse_time(spec["term"]["end"]))
    now = datetime.now(UTC)
    if args.until:
        until = parse_time(args.until)
        if until <= term.end:
            raise PluginError(f"--until {args.until} is not after the current end "
                              f"{format_time(term.end)}")
        new = Term(term.start, until)
    else:
        new = renewal_of_spec(spec, parse_duration(args.extend), now)[1]
    # The term is patched as a whole so start and end stay consistent (CEL checks both).
    api.patch(LICENSE.plural, lic["metadata"]["name"],
              {"spec": {"term": {"start": format_time(new.start), "end": format_time(new.end)}}})
    print(f"license.{GROUP}/{lic['metadata']['name']} renewed: term "
          f"{format_time(new.start)} → {format_time(new.end)}")
    return 0


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    keep = {k: meta[k] for k in ("name", "labels") if meta.get(k)}
    annotations = {k: v for k, v in meta.get("annotations", {}).items()
                   if not k.startswith(("kameng.io/", "kubectl.kubernetes.io/", "kopf."))}
    if annotations:
        keep["annotations"] = annotations
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": keep,
            "spec": obj["spec"]}


def cmd_export(api: Api, args: argparse.Namespace) -> int:
    """The site's three resources as clean YAML, ready to commit to a GitOps repo."""
    ss = api.get(SUBSITE.plural, args.site)
    docs = [api.get(LICENSE.plural, ss["spec"]["licenseRef"]),
            api.get(ROLEPOLICY.plural, ss["spec"]["rolePolicyRef"]), ss]
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List",
                          "items": [_clean(d) for d in docs]}, indent=2, ensure_ascii=False))
    else:
        print(yaml.safe_dump_all([_clean(d) for d in docs], sort_keys=False,
                                 allow_unicode=True), end="")
    return 0


def cmd_rotate_credentials(api: Api, args: argparse.Namespace) -> int:
    """Ask the operator for a new HQ API token for one site: a new value of the SubSite's
    rotation annotation, acted on once. Other sites' tokens are not touched."""
    api.get(SUBSITE.plural, args.site)  # a clear error for an unknown site
    request = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api.patch(SUBSITE.plural, args.site,
              {"metadata": {"annotations": {ROTATE_CREDENTIALS_ANNOTATION: request}}})
    print(f"subsite.{GROUP}/{args.site}: HQ API token rotation requested ({request}); the "
          "old token stops working at HQ once the new one is in the site's Secret, and the "
          "storefront rolls to pick it up")
    return 0


def add_rotate_credentials(sub: Any) -> None:
    s = sub.add_parser("rotate-credentials",
                       help="mint a new HQ API token for one sub-site (the old one dies)")
    s.add_argument("site")
    s.set_defaults(fn=cmd_rotate_credentials)


def cmd_statement(api: Api, args: argparse.Namespace) -> int:
    """A site's statement from HQ's ledger: the closed one of the period holding
    ``--period`` (a date), or a draft of the open period."""
    import asyncio

    from psycopg import AsyncConnection

    from kameng.ledger import statements
    from kameng.ledger.rules import Rates

    if not args.dsn:
        raise PluginError("statement needs HQ's database: --dsn or KAMENG_HQ_DATABASE_URL")
    # By spec.subSite, not through the SubSite: a terminated site's statements stay
    # readable, and without any License the closed ones still are.
    lic = next((x for x in api.list(LICENSE.plural)
                if x.get("spec", {}).get("subSite") == args.site), None)
    rates = Rates.from_fees(lic["spec"].get("fees", {}), license=lic["metadata"]["name"]) \
        if lic else None
    at = datetime.fromisoformat(args.period).replace(tzinfo=UTC) if args.period \
        else datetime.now(UTC)

    async def fetch() -> tuple[datetime, datetime, dict[str, Any], bool]:
        async with await AsyncConnection.connect(args.dsn) as conn:
            return await statements.find(conn, args.site, rates, at)

    try:
        start, end, figures, closed = asyncio.run(fetch())
    except LookupError as e:
        raise PluginError(str(e)) from None
    if args.output == "json":
        print(json.dumps({"site": args.site, "periodStart": start.isoformat(),
                          "periodEnd": end.isoformat(), "closed": closed, **figures},
                         indent=2))
    else:
        print(statements.to_csv(args.site, start, end, figures, closed), end="")
    return 0


def add_statement(sub: Any) -> None:
    s = sub.add_parser("statement", help="a sub-site's settlement statement (CSV or JSON)")
    s.add_argument("site")
    s.add_argument("--period", help="a date in the period, e.g. 2026-10-01 (default: now, "
                   "the open period as a draft)")
    s.add_argument("--dsn", default=os.environ.get("KAMENG_HQ_DATABASE_URL", ""),
                   help="HQ's PostgreSQL (env KAMENG_HQ_DATABASE_URL)")
    s.add_argument("-o", "--output", choices=("csv", "json"), default="csv")
    s.set_defaults(fn=cmd_statement)


def cmd_release(api: Api, args: argparse.Namespace) -> int:
    """Lift a hold (``hold.kameng.io/<kind>``) from the site's License: the one way a risk
    suspension ends. Only the annotation is removed; the spec Git owns is not touched."""
    lic = license_of(api, args.site)
    name = lic["metadata"]["name"]
    key = HOLD_PREFIX + args.kind
    held = {h.kind: h for h in holds_of(lic["metadata"].get("annotations"))}
    if args.kind not in held:
        print(f"license.{GROUP}/{name}: no {args.kind} hold; nothing to release")
        return 0
    # A merge patch with null removes the annotation and nothing else.
    api.patch(LICENSE.plural, name, {"metadata": {"annotations": {key: None}}})
    h = held[args.kind]
    print(f"license.{GROUP}/{name}: {args.kind} hold released (placed {h.since or '?'} by "
          f"{h.by or '?'}: {h.reason or 'no reason'}); sub-site {args.site} "
          + ("is restored" if h.suspends else "payouts resume"))
    return 0


def add_release(sub: Any) -> None:
    s = sub.add_parser("release", help="lift a risk or payout hold from a sub-site")
    s.add_argument("site")
    s.add_argument("--kind", choices=HOLD_KINDS, default="risk",
                   help="which hold (default: %(default)s)")
    s.set_defaults(fn=cmd_release)


def cmd_risk_backtest(api: Api, args: argparse.Namespace) -> int:
    """Replay the stored decisions through a RiskPolicy (needs KAMENG_HQ_DATABASE_URL, where
    the outcomes are stored, and KAMENG_REDIS_URL for scratch counters, e.g. through a
    port-forward)."""
    import asyncio

    from kameng.workers.risk import cli as risk_cli

    return asyncio.run(risk_cli._backtest(args))


def add_risk(sub: Any) -> None:
    s = sub.add_parser("risk", help="risk engine: backtest a RiskPolicy")
    rsub = s.add_subparsers(dest="risk_verb", required=True)
    b = rsub.add_parser("backtest", help="replay stored events through a policy and print "
                        "what it would have decided beside what was decided")
    b.add_argument("policy")
    b.add_argument("--since", default="7d", help="how far back: 7d, 24h, 30m")
    b.add_argument("--file", help="a RiskPolicy YAML (a version not applied yet)")
    b.add_argument("--all", action="store_true", help="every event, not only the changes")
    b.set_defaults(fn=cmd_risk_backtest)


def site_url(ss: dict[str, Any]) -> str:
    """Where the shop is reached: the URL the operator reports, else its domain."""
    url = (ss.get("status") or {}).get("url")
    return url or f"https://{ss['spec']['domain']}"


def cmd_invite(api: Api, args: argparse.Namespace) -> int:
    """One-time set-password links for members of a sub-site, signed with a key derived
    from the site's session secret (HQ's copy in the operator's namespace)."""
    ss = api.get(SUBSITE.plural, args.site)
    members = ss["spec"].get("members") or []
    if args.all:
        chosen = members
    elif not args.member:
        raise PluginError("name the member(s) to invite, or --all")
    else:
        chosen = []
        for wanted in args.member:
            m = next((m for m in members if wanted in (m["name"], m["email"])), None)
            if m is None:
                names = ", ".join(m["name"] for m in members) or "none"
                raise PluginError(f"sub-site {args.site} has no member {wanted!r} "
                                  f"(members: {names})")
            chosen.append(m)
    if not chosen:
        raise PluginError(f"sub-site {args.site} has no members")
    ttl = parse_duration(args.ttl).total_seconds()
    secret = api.secret_data(args.namespace, keyvault.backup_name(args.site)).get(
        keyvault.SESSION)
    if not secret:
        raise PluginError(f"the key copy of {args.site} has no session secret yet: is the "
                          "site provisioned?")
    base = args.url or site_url(ss)
    out = []
    for m in chosen:
        token = invitation.issue(secret, args.site, m["name"], m["email"], ttl_seconds=ttl)
        out.append({"member": m["name"], "email": m["email"], "role": m["role"],
                    "url": invitation.invitation_url(base, token)})
    expires = format_time(datetime.now(UTC).replace(microsecond=0)
                          + parse_duration(args.ttl))
    if args.output == "json":
        print(json.dumps({"site": args.site, "expiresAt": expires, "invitations": out},
                         indent=2, ensure_ascii=False))
    else:
        for row in out:
            print(f"{row['member']}\t{row['email']}\t{row['url']}")
    print(f"{len(out)} invitation(s) for {args.site}, valid once each until {expires}. "
          "Each link lets its holder set that member's password: hand it over privately.",
          file=sys.stderr)
    return 0


# --- approvals: HQ's queue of partners' change requests ------------------------------------
#
# The requests live in HQ's database, so the plugin asks HQ. By default it goes through the
# API server's service proxy to HQ's Service (no port-forward, no Ingress for an admin API;
# whoever runs it needs `get services/proxy` in HQ's namespace) and presents HQ's admin API
# token, read from the Secret HQ mounts it from (HQ's rights, like `invite`). `--hq-url`
# talks to HQ directly (a port-forward, the dev environment); the token then comes from
# KAMENG_HQ_ADMIN_TOKEN or the Secret.

HQ_ADMIN_TOKEN_SECRET = "kameng-hq-admin-token"  # noqa: S105 - a Secret name
HQ_ADMIN_TOKEN_KEY = "token"  # noqa: S105


def _hq_call(api: Api, args: argparse.Namespace, method: str, path: str,
             body: dict[str, Any] | None = None) -> dict[str, Any]:
    from kameng.contracts.hq_api import ADMIN_TOKEN_HEADER

    token = os.environ.get("KAMENG_HQ_ADMIN_TOKEN") or api.secret_data(
        args.namespace, HQ_ADMIN_TOKEN_SECRET).get(HQ_ADMIN_TOKEN_KEY, "")
    if not token:
        raise PluginError(f"no HQ admin token (Secret {args.namespace}/"
                          f"{HQ_ADMIN_TOKEN_SECRET} or KAMENG_HQ_ADMIN_TOKEN)")
    headers = {ADMIN_TOKEN_HEADER: token, "Content-Type": "application/json"}
    if args.hq_url:
        import httpx

        try:
            r = httpx.request(method, args.hq_url.rstrip("/") + path, json=body,
                              headers=headers, timeout=30)
        except httpx.HTTPError as exc:
            raise PluginError(f"HQ at {args.hq_url} unreachable: {type(exc).__name__}") \
                from None
        status, text = r.status_code, r.text
    else:
        proxy = (f"/api/v1/namespaces/{args.namespace}/services/{args.hq_service}/proxy"
                 + path)
        try:
            resp = api.co.api_client.call_api(
                proxy, method, header_params=headers, body=body,
                auth_settings=["BearerToken"], _preload_content=False)
            status, text = resp[1], resp[0].data.decode()
        except api._exc as e:
            status, text = e.status, e.body or ""
    try:
        data = json.loads(text)
    except ValueError:
        data = {}
    if status >= 400:
        code = data.get("error") or f"HTTP {status}"
        raise PluginError(f"HQ refused: {code}")
    return dict(data)


def _by(api: Api, args: argparse.Namespace) -> str:
    """Who decides: --as-name, else the kubeconfig context's user."""
    if args.as_name:
        return str(args.as_name)
    from kubernetes import config

    _, current = config.list_kube_config_contexts()
    return str((current or {}).get("context", {}).get("user") or "kubectl")


def cmd_approvals(api: Api, args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    from kameng.contracts.hq_api import ADMIN_APPROVALS_PATH

    query = {k: v for k, v in (("status", None if args.all else "pending"),
                               ("site", args.site)) if v}
    data = _hq_call(api, args, "GET", ADMIN_APPROVALS_PATH
                    + (f"?{urlencode(query)}" if query else ""))
    rows = data.get("requests") or []
    if args.output == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print("ID\tSITE\tCHANGE\tBY\tAT\tSTATUS\tDECIDED BY")
    for r in rows:
        print("\t".join([r["id"], r["site"], r["kind"], r["requested_by"],
                         r["requested_at"][:19], r["status"], r.get("decided_by") or "-"]))
        print(f"\t  {json.dumps(r['change'], ensure_ascii=False)}")
    return 0


def _decide(api: Api, args: argparse.Namespace, decision: str) -> int:
    from kameng.contracts.hq_api import admin_decision_path

    if decision == "reject" and not (args.reason or "").strip():
        raise PluginError("a rejection needs --reason")
    r = _hq_call(api, args, "POST", admin_decision_path(args.id, decision),
                 {"by": _by(api, args), "reason": args.reason or ""})
    print(f"{r['id']} ({r['site']}, {r['kind']}): {r['status']}"
          + (f" — {r['error']}" if r.get("error") else ""))
    return 0 if r["status"] in ("applied", "rejected") else 1


def cmd_approve(api: Api, args: argparse.Namespace) -> int:
    return _decide(api, args, "approve")


def cmd_reject(api: Api, args: argparse.Namespace) -> int:
    return _decide(api, args, "reject")


def add_approvals(sub: Any) -> None:
    def common(s: Any) -> None:
        s.add_argument("--hq-url", help="HQ's URL (default: through the API server's "
                       "service proxy to --hq-service)")
        s.add_argument("--hq-service", default="kameng-hq:http",
                       help="HQ's Service[:port name] in --namespace")
        s.add_argument("--namespace", default=os.environ.get("KAMENG_NAMESPACE",
                                                             "kameng-system"),
                       help="HQ's namespace (its Service and admin token Secret)")

    s = sub.add_parser("approvals", help="partners' change requests waiting for HQ")
    s.add_argument("--site", help="only this sub-site")
    s.add_argument("--all", action="store_true", help="decided ones too")
    s.add_argument("-o", "--output", choices=("text", "json"), default="text")
    common(s)
    s.set_defaults(fn=cmd_approvals)
    for verb, fn, help_ in (("approve", cmd_approve, "approve a change request; HQ applies "
                             "it to the SubSite"),
                            ("reject", cmd_reject, "reject a change request (needs --reason)")):
        s = sub.add_parser(verb, help=help_)
        s.add_argument("id", help="request id (see `approvals`)")
        s.add_argument("--reason", help="why; kept with the request")
        s.add_argument("--as-name", help="who decides (default: the kubeconfig user)")
        common(s)
        s.set_defaults(fn=fn)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubectl kameng", description=__doc__.split("\n")[0])
    p.add_argument("--context", help="kubeconfig context to use")
    sub = p.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("status", help="sub-sites with phase, license and what is wrong")
    s.add_argument("site", nargs="?")
    s.set_defaults(fn=cmd_status)
    s = sub.add_parser("suspend", help="suspend a sub-site (patches its License)")
    s.add_argument("site")
    s.add_argument("--reason", required=True, help="why; shown in status and Events")
    s.set_defaults(fn=cmd_suspend)
    s = sub.add_parser("resume", help="lift a suspension")
    s.add_argument("site")
    s.set_defaults(fn=cmd_resume)
    s = sub.add_parser("renew", help="extend a sub-site's license term")
    s.add_argument("site")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--extend", help="by a duration per the License's renewal strategy, "
                   "e.g. 365d")
    g.add_argument("--until", help="to an explicit RFC 3339 end")
    s.set_defaults(fn=cmd_renew)
    s = sub.add_parser("export", help="print the site's License, RolePolicy and SubSite")
    s.add_argument("site")
    s.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    s.set_defaults(fn=cmd_export)
    add_rotate_credentials(sub)
    from kameng.cli.site_cmd import add_kubectl_verbs  # export-data, terminate
    add_kubectl_verbs(sub)
    add_statement(sub)
    add_release(sub)
    add_risk(sub)
    add_approvals(sub)
    s = sub.add_parser("invite", help="print one-time set-password links for members")
    s.add_argument("site")
    s.add_argument("member", nargs="*", help="member name or e-mail (several allowed)")
    s.add_argument("--all", action="store_true", help="every member of the site")
    s.add_argument("--ttl", default="72h", help="how long a link stays valid (max 30d)")
    s.add_argument("--url", help="base URL of the shop (default: its status URL / domain)")
    s.add_argument("--namespace", default=os.environ.get("KAMENG_NAMESPACE", "kameng-system"),
                   help="the operator's namespace, where HQ keeps the site keys")
    s.add_argument("-o", "--output", choices=("text", "json"), default="text")
    s.set_defaults(fn=cmd_invite)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(Api(args.context), args)
    except (PluginError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
