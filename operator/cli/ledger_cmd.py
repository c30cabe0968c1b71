"""`kameng ledger verify | migrate`: the ledger from the terminal."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("verify", "migrate"),
                   help="verify: prove the ledger (non-zero exit naming each difference)")
    p.add_argument("--dsn", default=os.environ.get("KAMENG_HQ_DATABASE_URL", ""),
                   help="HQ's PostgreSQL; env KAMENG_HQ_DATABASE_URL")
    p.add_argument("--no-payments", action="store_true",
                   help="skip the comparison with HQ's payments table")


async def _main(args: argparse.Namespace) -> int:
    from psycopg import AsyncConnection

    from kameng.ledger.repo import migrate
    from kameng.ledger.verify import verify

    if not args.dsn:
        raise SystemExit("kameng ledger: --dsn is required")
    async with await AsyncConnection.connect(args.dsn, autocommit=True) as conn:
        if args.action == "migrate":
            for v in await migrate(conn):
                print(f"applied {v}")
            return 0
        problems = await verify(conn, check_payments=not args.no_payments)
    for p in problems:
        print(f"DIFFERENCE: {p}", file=sys.stderr)
    if problems:
        return 1
    print("ledger verified: every entry balances, balances match postings, money received "
          "matches payments, statements re-compute")
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))
