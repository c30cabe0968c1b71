"""The partner's money as HQ's settlement ledger has it, fetched through the HQ API: the
available balance, what became of each withdrawal (pending / held / paid / voided) and the
closed statements with their CSV. HQ is the source of truth; an unreachable HQ shows as
such, never as a zero balance."""

from __future__ import annotations

import logging
import re

from kameng.contracts.hq_api import SettlementView

from ..state import AppState
from .hq_client import HqError

log = logging.getLogger(__name__)
_PERIOD = re.compile(r"^\d{4}-\d{2}-\d{2}$")


async def hq_settlement(state: AppState) -> SettlementView | None:
    try:
        return await state.hq.settlement()
    except HqError as exc:
        log.warning("settlement view unavailable", extra={"error": str(exc)[:200]})
        return None


async def hq_statement_csv(state: AppState, period: str) -> bytes | None:
    if not _PERIOD.match(period):
        return None
    try:
        return await state.hq.statement_csv(period)
    except HqError as exc:
        log.warning("statement unavailable", extra={"error": str(exc)[:200]})
        return None
