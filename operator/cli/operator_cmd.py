"""`kameng operator`: run the kopf operator against the current KUBECONFIG.

PostgreSQL and Redis admin credentials come from ``KAMENG_PG_ADMIN_DSN`` and
``KAMENG_REDIS_URL`` (set from Secrets when deployed) — never from flags, so they do
not show up in process listings.

Peering is on by default (ClusterKopfPeering ``kameng``): several operators may run,
one acts. ``--standalone`` runs without peering and refuses to start while another
operator is active.
"""

from __future__ import annotations

import argparse
import logging
import os

DEFAULT_PEERING = "kameng"
EXIT_ANOTHER_ACTIVE = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--standalone", action="store_true",
                   help="no peering: refuse to start if another operator is active")
    p.add_argument("--peering", metavar="NAME",
                   default=os.environ.get("KAMENG_PEERING", DEFAULT_PEERING),
                   help="ClusterKopfPeering name; operators in one peering: one acts, the "
                   "others wait (default: %(default)s)")
    p.add_argument("--peering-lifetime", type=int,
                   default=int(os.environ.get("KAMENG_PEERING_LIFETIME", "60")),
                   help="seconds after which a silent peer is presumed dead and another "
                   "one takes over (default: %(default)s)")
    p.add_argument("--namespace", default=os.environ.get("KAMENG_NAMESPACE", "kameng-system"),
                   help="operator namespace holding the HQ keys Secret")
    p.add_argument("--metrics-port", type=int,
                   default=int(os.environ.get("KAMENG_METRICS_PORT", "8080")),
                   help="port of /metrics (0 disables)")
    p.add_argument("--liveness", default=os.environ.get("KAMENG_LIVENESS",
                                                        "http://0.0.0.0:8081/healthz"),
                   help="kopf liveness endpoint URL ('' disables)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("KAMENG_WORKERS", "16")),
                   help="reconciles running at the same time")
    p.add_argument("--resync-seconds", type=float,
                   default=float(os.environ.get("KAMENG_RESYNC_SECONDS", "300")),
                   help="periodic resync of every SubSite (jittered ±20%%)")
    p.add_argument("--storefront-image", default=None, help="default storefront image")
    p.add_argument("--hq-url", default=None, help="HQ base URL written into site configs")
    p.add_argument("--hq-public-url", default=None,
                   help="HQ's URL as customers' browsers reach it (pay pages); default --hq-url")
    p.add_argument("--ingress-class", default=None, help="ingressClassName of Ingresses")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    import asyncio

    import kopf

    from kameng.controller import exclusive, kopf_setup
    from kameng.controller.config import OperatorConfig

    from .memory_profile import install as install_memory_profile

    install_memory_profile()  # only with KAMENG_MEMORY_PROFILE set

    cfg = OperatorConfig.from_env()
    cfg.namespace = args.namespace
    cfg.metrics_port = args.metrics_port
    cfg.workers = args.workers
    cfg.resync_seconds = args.resync_seconds
    cfg.storefront_image = args.storefront_image or cfg.storefront_image
    cfg.hq_url = args.hq_url or cfg.hq_url
    cfg.hq_public_url = args.hq_public_url or cfg.hq_public_url
    cfg.ingress_class = args.ingress_class or cfg.ingress_class
    cfg.kubeconfig = os.environ.get("KUBECONFIG") or None
    cfg.peering = None if args.standalone else args.peering
    cfg.peering_lifetime = args.peering_lifetime

    import kameng.controller.handlers  # noqa: F401 - registers the handlers

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf logs every handled watch event at INFO; at scale that drowns everything.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if args.verbose
                                               else logging.WARNING)
    memo = kopf.Memo(config=cfg)
    try:
        memo.lease = asyncio.run(exclusive.preflight(cfg))
    except exclusive.CannotStart as exc:
        logging.getLogger("kameng.operator").error("%s", exc)
        return EXIT_ANOTHER_ACTIVE
    settings = kopf.OperatorSettings()
    kopf_setup.configure(settings, cfg)
    kopf.run(
        settings=settings,
        clusterwide=True,
        liveness_endpoint=args.liveness or None,
        memo=memo,
    )
    return 0
