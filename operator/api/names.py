"""Names a SubSite may not have, because what the operator derives from them
(namespace ``kameng-<name>``, PostgreSQL role and database ``kameng_<name>``, Redis user
``kameng-site-<name>``) would be the platform's own objects.

The CRD rejects them at admission (a CEL rule built from these tuples); the operator
additionally refuses, at run time, to touch any role that is a superuser or the admin
DSN's own user, whatever its name, and anything it did not create (see
``kameng.provision``).
"""

from __future__ import annotations

RESERVED_SITE_NAMES: tuple[str, ...] = (
    "system",   # kameng-system: the operator's and HQ's namespace
    "admin",    # kameng_admin: the admin role of the shipped PostgreSQL setups
    "default",
    "operator",
    "hq",       # kameng_hq / kameng-hq: HQ's database and Service
    "public",
    "postgres",
    "template",
)
RESERVED_PREFIXES: tuple[str, ...] = (
    "kube-",    # kameng-kube-*: confusable with the cluster's own namespaces
    "system-",
    "pg-",      # kameng_pg_*: confusable with PostgreSQL's own role names
)
