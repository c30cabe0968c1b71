"""Where a site's database lives when the operator knows several PostgreSQL servers —
pure rules, no I/O.

* A site is placed once, capacity-aware: among the servers whose labels match the site's
  ``spec.database.serverSelector`` and that have room, the least loaded relative to its
  capacity (:func:`choose`).
* The placement is recorded twice, as the SubSite annotation ``kameng.io/database-server``
  and ``status.databaseServer``; :func:`recorded` reads it back. Once recorded it is never
  changed by a reconcile: only a move request (annotation ``kameng.io/move-database-to``)
  changes it, so a site never moves by accident (a new server in the list, a server that
  fills up, an edited selector, an operator restart).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kameng.api.kinds import DATABASE_SERVER_ANNOTATION


@dataclass(frozen=True)
class ServerInfo:
    """What placement needs to know of a server (no credentials)."""

    name: str
    capacity: int = 0  # sites it takes; 0 = unlimited
    labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, selector: Mapping[str, str] | None) -> bool:
        return all(self.labels.get(k) == v for k, v in (selector or {}).items())


def choose(servers: list[ServerInfo], counts: Mapping[str, int],
           selector: Mapping[str, str] | None) -> ServerInfo | None:
    """The server a new site goes to, or None when none matches or all are full.

    The least loaded by fraction of capacity wins (unlimited servers by their site count
    against the largest bounded capacity, so one unlimited server does not take every new
    site); ties go to the server listed first, so the choice is deterministic."""
    fits = [s for s in servers if s.matches(selector)
            and (s.capacity == 0 or counts.get(s.name, 0) < s.capacity)]
    if not fits:
        return None
    ref = max((s.capacity for s in servers if s.capacity), default=1)

    def load(s: ServerInfo) -> float:
        return counts.get(s.name, 0) / (s.capacity or ref)

    best = min(load(s) for s in fits)
    return next(s for s in fits if load(s) == best)


@dataclass(frozen=True)
class Recorded:
    """The placement as recorded on the SubSite: ``server`` (None: not placed yet) and a
    disagreement between annotation and status worth a person's attention."""

    server: str | None
    conflict: str | None = None


def recorded(annotations: Mapping[str, str] | None, status_server: str | None) -> Recorded:
    """Read the placement back. The status is the operator's own record of where the
    data is; the annotation survives a lost status (a restore from Git, a re-created
    object) and lets a person choose before the site is first placed."""
    annotated = (annotations or {}).get(DATABASE_SERVER_ANNOTATION) or None
    if status_server and annotated and annotated != status_server:
        return Recorded(status_server, (
            f"annotation {DATABASE_SERVER_ANNOTATION}={annotated} disagrees with "
            f"status.databaseServer={status_server}, where the site's data is: the "
            f"site stays on {status_server}. To move it, set the annotation "
            f"kameng.io/move-database-to={annotated}; otherwise set "
            f"{DATABASE_SERVER_ANNOTATION} back to {status_server}"))
    return Recorded(status_server or annotated)


def counts_of(placements: Mapping[str, str]) -> dict[str, int]:
    """Sites per server from a site → server mapping."""
    out: dict[str, int] = {}
    for server in placements.values():
        out[server] = out.get(server, 0) + 1
    return out


@dataclass(frozen=True)
class Decision:
    """Where the site's database is (or goes), and what the reconcile must do about it."""

    server: str | None  # None: the site cannot be placed (see problem)
    annotate: bool = False  # record the placement in the annotation (before provisioning)
    move_to: str | None = None  # a requested move to this (known) server
    move_done: bool = False  # a move request that is already fulfilled: drop it
    problem: str | None = None  # needs a person; nothing is provisioned
    warning: str | None = None  # worth saying, changes nothing


def decide(annotations: Mapping[str, str] | None, status_server: str | None,
           servers: list[ServerInfo], counts: Mapping[str, int],
           selector: Mapping[str, str] | None, legacy_server: str | None,
           move_request: str | None) -> Decision:
    """The placement of one site.

    ``legacy_server`` is where an existing site's database already is when nothing
    records it (a site made before placement existed, found by its database DSN): such a
    site is recorded where it is, never placed anew."""
    names = {s.name for s in servers}
    rec = recorded(annotations, status_server)
    annotated = (annotations or {}).get(DATABASE_SERVER_ANNOTATION) or None
    if rec.server is not None:
        if rec.server not in names:
            return Decision(None, problem=(
                f"the site's database is on PostgreSQL server {rec.server!r}, which is not "
                f"in the operator's server list ({', '.join(sorted(names))}); add it back "
                "(or move the site: docs/runbooks.md)"))
        server, annotate = rec.server, annotated is None
    elif legacy_server is not None:
        server, annotate = legacy_server, True
    else:
        chosen = choose(servers, counts, selector)
        if chosen is None:
            wanted = (" with labels " + ", ".join(f"{k}={v}" for k, v in
                                                  sorted((selector or {}).items()))
                      if selector else "")
            return Decision(None, problem=(
                f"no PostgreSQL server{wanted} has room for another site (servers: "
                + ", ".join(f"{s.name} {counts.get(s.name, 0)}/{s.capacity or '∞'}"
                            for s in servers) + ")"))
        server, annotate = chosen.name, True
    if move_request and move_request != server:
        if move_request not in names:
            return Decision(server, annotate, warning=(
                f"move requested to PostgreSQL server {move_request!r}, which is not in the "
                f"operator's server list; the site stays on {server}"))
        return Decision(server, annotate, move_to=move_request, warning=rec.conflict)
    return Decision(server, annotate, move_done=bool(move_request), warning=rec.conflict)
