"""The operator: kopf handler registration (:mod:`.handlers`) and, in topic modules, the
SubSite reconcile and deletion, License/RolePolicy status, per-site state (kopf's memo),
the one-active-operator check, metrics, and kopf's own settings (:mod:`.kopf_setup`)."""
