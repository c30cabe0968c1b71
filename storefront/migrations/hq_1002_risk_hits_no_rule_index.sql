-- risk.hits is written once per rule hit by the risk worker's hot path (issue 10) and read
-- only by event id (the review pages: `WHERE event_id = ANY(...)`, served by the primary
-- key). The (policy, rule) index served no query (per-rule counts are the
-- kameng_risk_rule_hits_total metric) and cost every hit an index insert: ~3-4 µs of
-- PostgreSQL CPU per event in the risk benchmark.
DROP INDEX IF EXISTS risk.risk_hits_rule;
