"""The settlement ledger: pure posting rules (:mod:`.rules`), statements
(:mod:`.statements`), the PostgreSQL repository (:mod:`.repo`) with its own migrations,
and verification (:mod:`.verify`)."""
