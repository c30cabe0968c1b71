"""The shape of a stored rule hit (``risk.decisions.hits``, migration hq_1003): written by
the worker's store, read by the review service (which the storefront imports, so this
module imports nothing)."""

HIT_FIELDS = ("policy", "rule", "generation", "mode", "action", "reason", "error")
