"""Names a SubSite may not have, because what the operator derives from them
(namespace ``kameng-<name>``, PostgreSQL role and database ``kameng_<name>``, Redis user
``kameng-site-<name>``) would be the platform's own objects.

The CRD rejects them at admission (a CEL rule built from these tuples); the operator
additionally refuses, at run time, to touch any role that is a superuser or the admin
DSN's own user, whatever its name, and anything it did not create (see
``kameng.provision``).
"""

from __future__ import annotations

import re

from .common import DNS_LABEL_RE

# The namespace kameng-<name> must stay within a DNS label's 63 characters.
MAX_SITE_NAME_LENGTH = 56

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


def site_name_refusal(name: str) -> str | None:
    """Why ``name`` cannot be a SubSite's name (the admission rules of the CRD, for
    callers that want to say so before the API server does, e.g. HQ's partner
    application), or None when it can."""
    if not name or len(name) > MAX_SITE_NAME_LENGTH:
        return f"between 1 and {MAX_SITE_NAME_LENGTH} characters"
    if not re.match(DNS_LABEL_RE, name):
        return "lowercase letters, digits and '-' only, starting and ending with a letter or digit"
    if name in RESERVED_SITE_NAMES or name.startswith(RESERVED_PREFIXES):
        return "reserved for the platform's own objects"
    return None
