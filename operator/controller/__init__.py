"""The operator: kopf handler registration (:mod:`.handlers`) and the reconcile logic,
status, events, metrics and settings in topic modules."""
