"""Status of a SubSite on its way out: Exporting → Exported (with the archive) and a
stalled export that says why; unchanged input, identical output (no write)."""

from __future__ import annotations

from datetime import UTC, datetime

from kameng.api import conditions as c
from kameng.api.subsite import SubSiteStatus
from kameng.controller.status import terminating

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _conds(st: dict) -> dict[str, dict]:
    return {x["type"]: x for x in st["conditions"]}


def test_exporting_then_exported_carries_the_archive() -> None:
    st = terminating(None, c.R_EXPORTING, "exporting", False, 3, T0, phase=c.PHASE_EXPORTING,
                     exported=(False, c.R_EXPORTING, "exporting"))
    assert st["phase"] == "Exporting"
    assert _conds(st)[c.EXPORTED]["status"] == "False"
    assert _conds(st)[c.RECONCILING]["status"] == "True"
    export = {"location": "s3://b/p/s.kmexit", "sha256": "a" * 64, "size": 10,
              "finishedAt": "2026-12-01T12:00:05Z", "seconds": 5.0}
    done = terminating(st, c.R_EXPORTED, "archive s3://b/p/s.kmexit", False, 3, T0,
                       phase=c.PHASE_EXPORTED, exported=(True, c.R_EXPORTED, "ok"),
                       export=export)
    assert done["export"] == export
    assert _conds(done)[c.EXPORTED]["status"] == "True"
    SubSiteStatus.model_validate(done)  # what the CRD schema accepts


def test_failed_export_is_stalled_and_repeats_identically() -> None:
    a = terminating(None, c.R_EXPORT_FAILED, "export failed: store down", True, 1, T0,
                    phase=c.PHASE_EXPORTING, exported=(False, c.R_EXPORT_FAILED, "down"))
    assert _conds(a)[c.STALLED]["status"] == "True"
    assert _conds(a)[c.STALLED]["reason"] == c.R_EXPORT_FAILED
    assert "export" not in a
    later = datetime(2026, 12, 1, 12, 5, tzinfo=UTC)
    assert terminating(a, c.R_EXPORT_FAILED, "export failed: store down", True, 1, later,
                       phase=c.PHASE_EXPORTING,
                       exported=(False, c.R_EXPORT_FAILED, "down")) == a


def test_reclaim_status_keeps_the_export() -> None:
    st = {"phase": "Exported", "export": {"location": "file:///x", "sha256": "b" * 64,
                                          "size": 1, "finishedAt": "2026-12-01T12:00:05Z"}}
    nxt = terminating(st, c.R_RECLAIMING, "reclaiming", False, 1, T0)
    assert nxt["phase"] == c.PHASE_TERMINATING
    assert "export" not in nxt  # a merge patch: the written export stays as it is
