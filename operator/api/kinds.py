"""The kinds registry: every kind the operator reads or writes → where it lives in the
API (group/version, plural, namespaced), plus the annotation and finalizer names the
operator puts on objects. The one kind → plural table of the project."""

from __future__ import annotations

from dataclasses import dataclass

from .common import API_VERSION, GROUP
from .resources import KINDS

# kopf keeps its bookkeeping under this prefix (never kopf.zalando.org).
ANNOTATION_PREFIX = GROUP
FINALIZER = f"{GROUP}/reclaim"
SKIP_RECLAIM_ANNOTATION = f"{GROUP}/skip-reclaim"
# On a SubSite being deleted: "true" lets the reclaim go ahead WITHOUT an exit archive
# (the way out when the store cannot be fixed and the data may go); audited by an Event.
WAIVE_EXPORT_ANNOTATION = f"{GROUP}/waive-export"
# On a License whose site was exported and reclaimed: when (RFC 3339).
TERMINATED_AT_ANNOTATION = f"{GROUP}/terminated-at"
APPLIED_HASH_ANNOTATION = f"{GROUP}/applied-hash"
KEYS_OF_LABEL = f"{GROUP}/keys-of"  # on the operator's copy of a site's keys
# On a SubSite: a new value asks the operator to mint a new HQ API token for the site, once
# (`kubectl kameng rotate-credentials`).
ROTATE_CREDENTIALS_ANNOTATION = f"{GROUP}/rotate-credentials"
# On a SubSite: another URL the shop is served at besides its domain (a platform team's
# setting, e.g. the dev environment's loopback shops); HQ accepts payment URLs there too.
SHOP_URL_ANNOTATION = f"{GROUP}/shop-url"
# On a SubSite: the PostgreSQL server (a name from the operator's server list) its database
# lives on. Written by the operator when it places the site (a person may set it before
# creating the SubSite to choose); never changed by the operator afterwards.
DATABASE_SERVER_ANNOTATION = f"{GROUP}/database-server"
# On a SubSite: a request to move its database to the named server (docs/runbooks.md,
# "Moving a site to another database server"); removed by the operator once done.
MOVE_DATABASE_ANNOTATION = f"{GROUP}/move-database-to"
# The SubSite annotations the operator acts on (a change wakes the site's loop).
ACTED_ON_ANNOTATIONS = (ROTATE_CREDENTIALS_ANNOTATION, SHOP_URL_ANNOTATION,
                        DATABASE_SERVER_ANNOTATION, MOVE_DATABASE_ANNOTATION)
# On a License and SubSite HQ's onboarding created: the partner application they came
# from. HQ adopts an existing object of that name only when it carries its own id.
ONBOARDING_APPLICATION_LABEL = f"{GROUP}/onboarding-application"
# On a SubSite: the HQ approval request whose change HQ applied last (`kameng.io/approved-
# change: <request id>`); a change of an approvable field without it came from the YAML.
APPROVED_CHANGE_ANNOTATION = f"{GROUP}/approved-change"
# The uid of the SubSite an object was created for: the operator's mark of ownership on
# namespaces and key copies (PostgreSQL objects carry it as a COMMENT, see
# kameng.provision.names). Nothing without this mark is ever adopted or deleted.
SUBSITE_UID_LABEL = f"{GROUP}/subsite-uid"


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


def _r(api_version: str, kind: str, plural: str, namespaced: bool = True) -> Resource:
    return Resource(api_version, kind, plural, namespaced)


# A SubSite's children, in the order they are applied; all are watched by label so that
# drift wakes their site.
CHILDREN: tuple[Resource, ...] = (
    _r("v1", "Namespace", "namespaces", namespaced=False),
    _r("v1", "ResourceQuota", "resourcequotas"),
    _r("v1", "LimitRange", "limitranges"),
    _r("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    _r("v1", "ServiceAccount", "serviceaccounts"),
    _r("rbac.authorization.k8s.io/v1", "Role", "roles"),
    _r("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    _r("v1", "ConfigMap", "configmaps"),
    _r("v1", "Secret", "secrets"),
    _r("apps/v1", "Deployment", "deployments"),
    _r("v1", "Service", "services"),
    _r("networking.k8s.io/v1", "Ingress", "ingresses"),
    _r("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
)
OWN: tuple[Resource, ...] = tuple(_r(API_VERSION, k.kind, k.plural, namespaced=False)
                                  for k in KINDS)
OTHERS: tuple[Resource, ...] = (
    _r("v1", "Event", "events"),
    _r("coordination.k8s.io/v1", "Lease", "leases"),
    _r("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False),
    # A CloudNativePG Cluster a PostgreSQL server entry may name (kameng.provision.servers).
    _r("postgresql.cnpg.io/v1", "Cluster", "clusters"),
)
RESOURCES: dict[str, Resource] = {r.kind: r for r in (*CHILDREN, *OWN, *OTHERS)}
PLURALS: dict[str, str] = {r.kind: r.plural for r in RESOURCES.values()}


def resource(kind: str) -> Resource:
    return RESOURCES[kind]
