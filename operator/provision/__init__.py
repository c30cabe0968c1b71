"""Per-site backing services outside Kubernetes: a PostgreSQL role + database and a
Redis ACL user. Idempotent; credentials are passed in and never logged."""
