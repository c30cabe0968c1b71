"""Cluster-wide workers on the sites' order streams (risk, settlement) and the
consumer-group machinery they share (:mod:`.streams`)."""
