"""SubSite: a partner's storefront (分站) and everything it becomes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from .common import (
    DNS_LABEL_RE,
    DNS_SUBDOMAIN_RE,
    EMAIL_RE,
    PERCENT_RE,
    UID_RE,
    Condition,
    KModel,
    cel,
    checked,
    conditions_field,
    rule,
)
from .license import Category

Phase = Literal["Pending", "Provisioning", "Ready", "Suspended", "Expired", "Terminating",
                "Failed", "Exporting", "Exported"]
ReclaimPolicy = Literal["Retain", "Delete"]
PaymentMethod = Literal["sandbox", "alipay", "wechatpay", "unionpay", "usdt"]
Locale = Literal["zh-CN", "en"]

RefName = Annotated[
    str, checked(DNS_LABEL_RE, "must name an object: lowercase letters, digits and '-'",
                 max_length=63, description="Name of the referenced object.")
]


class Owner(KModel):
    name: Annotated[str, Field(min_length=1, max_length=128, description="Partner's name.")]
    email: Annotated[
        str, checked(EMAIL_RE, "owner.email must be an e-mail address such as "
                     "ops@partner.example", max_length=254, description="Contact e-mail.")
    ]


class Tls(KModel):
    model_config = ConfigDict(json_schema_extra=cel(rule(
        "has(self.secretName) != has(self.clusterIssuer)",
        "tls needs exactly one of secretName (an existing certificate Secret) or "
        "clusterIssuer (a cert-manager ClusterIssuer)")))

    secret_name: Annotated[
        str | None, checked(DNS_SUBDOMAIN_RE, "tls.secretName must be a Secret name",
                            max_length=253, description="Existing kubernetes.io/tls Secret "
                            "in the sub-site namespace.")
    ] = None
    cluster_issuer: Annotated[
        str | None, checked(DNS_SUBDOMAIN_RE, "tls.clusterIssuer must be a ClusterIssuer "
                            "name", max_length=253,
                            description="cert-manager ClusterIssuer that issues the certificate.")
    ] = None


class Branding(KModel):
    title: Annotated[str | None, Field(max_length=64, description="Shop title.")] = None
    logo_url: Annotated[
        str | None, checked(r"^https://[^\s]+$", "branding.logoUrl must be an https:// URL",
                            max_length=512, description="Logo URL (https).")
    ] = None
    primary_color: Annotated[
        str, checked(r"^#[0-9a-fA-F]{6}$", "branding.primaryColor must be a hex colour "
                     "such as #c0392b", max_length=7, description="Theme colour (#rrggbb).")
    ] = "#c0392b"
    locale: Annotated[Locale, Field(description="Default language: zh-CN or en.")] = "zh-CN"


class PriceRule(KModel):
    category: Category
    markup_percent: Annotated[
        str,
        Field(max_length=7, description="Markup over HQ cost as a non-negative decimal "
              "string, e.g. \"15\" or \"7.5\".",
              json_schema_extra=cel(rule(
                  f"self.matches(r'{PERCENT_RE}') && double(self) <= 500.0",
                  "markupPercent must be a decimal string from \"0\" to \"500\" (a sale "
                  "price is never below HQ cost), e.g. \"15\""))),
    ]


class Catalog(KModel):
    price_rules: Annotated[
        list[PriceRule],
        Field(max_length=64, description="Markup per category.",
              json_schema_extra={"x-kubernetes-list-type": "map",
                                 "x-kubernetes-list-map-keys": ["category"]}),
    ] = Field(default_factory=list)
    hidden_products: Annotated[
        list[Annotated[str, Field(max_length=64)]],
        Field(max_length=512, description="HQ product SKUs this shop does not show.",
              json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)


class Payments(KModel):
    methods: Annotated[
        list[PaymentMethod],
        Field(min_length=1, max_length=8, description="Payment methods offered (through "
              "HQ's channel). Changes need HQ approval when the RolePolicy says so.",
              json_schema_extra={"x-kubernetes-list-type": "set", "default": ["sandbox"]}),
    ] = Field(default_factory=lambda: ["sandbox"])


class Member(KModel):
    name: Annotated[
        str, checked(DNS_LABEL_RE, "a member name must be a lowercase DNS label such as "
                     "'li-wei'", max_length=63, description="Login name.")
    ]
    email: Annotated[
        str, checked(EMAIL_RE, "a member email must be an e-mail address",
                     max_length=254, description="E-mail.")
    ]
    role: Annotated[
        str, checked(DNS_LABEL_RE, "member.role must name a role of the RolePolicy",
                     max_length=63, description="Role from the referenced RolePolicy.")
    ]
    kubernetes_user: Annotated[
        str | None, Field(min_length=1, max_length=253, description="Kubernetes user name "
                          "bound to this role's Kubernetes access in the namespace.")
    ] = None


class Resources(KModel):
    cpu: Annotated[str, Field(max_length=16, description="CPU request, e.g. 100m.")] = "100m"
    memory: Annotated[str, Field(max_length=16, description="Memory request and limit.")] = "256Mi"


class StorefrontSpec(KModel):
    replicas: Annotated[int, Field(ge=1, le=20, description="Storefront pods (1-20).")] = 1
    image: Annotated[
        str | None, Field(max_length=512, description="Storefront image; defaults to the "
                          "operator's own storefront image.")
    ] = None
    resources: Annotated[
        Resources, Field(description="Per-pod resources.", json_schema_extra={"default": {}})
    ] = Field(default_factory=Resources)


class DatabaseSpec(KModel):
    reclaim_policy: Annotated[
        ReclaimPolicy,
        Field(description="What happens to the site's database when the SubSite is "
              "deleted: Retain keeps it (default), Delete drops it after the export."),
    ] = "Retain"
    adopt_retained_from: Annotated[
        str | None,
        checked(UID_RE, "database.adoptRetainedFrom must be the uid of the deleted SubSite "
                "whose retained data this one takes over, such as "
                "1f0c3a52-7d1e-4c39-9a57-3b6f0e0f2a11 (the operator names it in the "
                "RetainedDataExists condition)", max_length=36,
                description="Take over the data that a deleted SubSite of the same name "
                "left behind (reclaimPolicy Retain): its database, role and key copy. Set "
                "to that SubSite's uid; without it such data is never handed to a new "
                "SubSite."),
    ] = None
    server_selector: Annotated[
        dict[str, str] | None,
        Field(max_length=16, description="Labels the PostgreSQL server the site is placed "
              "on must carry (the operator's server list names each server's labels). "
              "Used only when the site is first placed: a placed site never moves unless "
              "asked to (annotation kameng.io/move-database-to)."),
    ] = None


class SubSiteSpec(KModel):
    display_name: Annotated[str, Field(min_length=1, max_length=128, description="Shop name.")]
    owner: Annotated[Owner, Field(description="The partner who runs the sub-site.")]
    license_ref: Annotated[RefName, Field(description="Name of the License for this site.")]
    role_policy_ref: Annotated[
        RefName, Field(description="Name of the RolePolicy for the site's staff.")
    ] = "standard"
    domain: Annotated[
        str,
        Field(max_length=253, pattern=DNS_SUBDOMAIN_RE, description="Public host name of the shop.",
              json_schema_extra=cel(rule(
                  f"self.matches(r'{DNS_SUBDOMAIN_RE}') && self.contains('.')",
                  "domain must be a lowercase DNS name such as shop.partner.example"))),
    ]
    tls: Annotated[Tls | None, Field(description="TLS for the Ingress.")] = None
    branding: Annotated[
        Branding, Field(description="Look of the shop.", json_schema_extra={"default": {}})
    ] = Field(default_factory=Branding)
    catalog: Annotated[
        Catalog, Field(description="Prices and visibility over HQ's catalogue.",
                       json_schema_extra={"default": {}})
    ] = Field(default_factory=Catalog)
    payments: Annotated[
        Payments, Field(description="Payment methods.", json_schema_extra={"default": {}})
    ] = Field(default_factory=Payments)
    members: Annotated[
        list[Member],
        Field(max_length=64, description="Staff of the sub-site.",
              json_schema_extra={"x-kubernetes-list-type": "map",
                                 "x-kubernetes-list-map-keys": ["name"]}),
    ] = Field(default_factory=list)
    storefront: Annotated[
        StorefrontSpec, Field(description="Storefront Deployment.",
                              json_schema_extra={"default": {}})
    ] = Field(default_factory=StorefrontSpec)
    database: Annotated[
        DatabaseSpec, Field(description="The site's own database.",
                            json_schema_extra={"default": {}})
    ] = Field(default_factory=DatabaseSpec)


class ExportStatus(KModel):
    location: Annotated[str, Field(max_length=1024, description="Where the exit archive is "
                                   "(file:// or s3:// URL).")]
    sha256: Annotated[str, Field(max_length=64, description="SHA-256 of the encrypted "
                                 "archive, hex.")]
    size: Annotated[int, Field(ge=0, description="Size of the archive in bytes.")]
    finished_at: Annotated[str, Field(description="When the export finished.",
                                      json_schema_extra={"format": "date-time"})]
    seconds: Annotated[float | None, Field(ge=0, description="How long it took.")] = None


class ChangeRecord(KModel):
    at: Annotated[str, Field(description="When the operator saw the change.",
                             json_schema_extra={"format": "date-time"})]
    fields: Annotated[
        list[Annotated[str, Field(max_length=32)]],
        Field(max_length=8, description="Approvable fields that changed."),
    ]
    source: Annotated[
        Literal["approval", "yaml"],
        Field(description="approval: applied by HQ for an approved request; yaml: edited "
              "in the SubSite directly (not blocked: HQ owns the YAML, but recorded)."),
    ]
    request: Annotated[
        str | None, Field(max_length=40, description="The HQ approval request, if any.")
    ] = None


class SubSiteStatus(KModel):
    phase: Annotated[Phase | None, Field(description="Life-cycle phase.")] = None
    namespace: Annotated[str | None, Field(max_length=63, description="Namespace.")] = None
    url: Annotated[str | None, Field(max_length=300, description="Public URL.")] = None
    license_state: Annotated[
        str | None, Field(max_length=32, description="State of the referenced License.")
    ] = None
    license_expires_at: Annotated[
        str | None, Field(description="End of the referenced License's term.",
                          json_schema_extra={"format": "date-time"})
    ] = None
    ready_replicas: Annotated[int | None, Field(ge=0, description="Ready pods.")] = None
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    export: Annotated[
        ExportStatus | None, Field(description="The exit archive made when the SubSite was "
                                   "deleted (before any data was reclaimed).")
    ] = None
    database_server: Annotated[
        str | None, Field(max_length=63, description="The PostgreSQL server (a name from "
                          "the operator's server list) the site's database lives on.")
    ] = None
    conditions: Annotated[list[Condition], conditions_field()]
    approvable_fingerprints: Annotated[
        list[Annotated[str, Field(max_length=64)]] | None,
        Field(max_length=8, description="field=hash of each approvable field as last "
              "seen, to notice a change."),
    ] = None
    last_approved_change: Annotated[
        str | None, Field(max_length=40, description="The kameng.io/approved-change "
                          "annotation as last seen.")
    ] = None
    change_history: Annotated[
        list[ChangeRecord] | None,
        Field(max_length=10, description="The last changes of approvable fields and "
              "where they came from."),
    ] = None
