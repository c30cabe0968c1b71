"""The settlement worker: order events → the ledger; withdrawals → payouts; statements."""
