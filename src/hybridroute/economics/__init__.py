"""Economics: what requests cost and what may still be spent.

`pricing` turns token usage into money with the configured price table; `windows` names the
calendar windows budgets are counted over; `ledger` keeps spend against budgets with
reserve → settle → release, raises the 80 % / 95 % / 100 % threshold events and persists every
charge through the ledger store.
"""

from hybridroute.economics.ledger import (
    BudgetEvent,
    CostLedger,
    LedgerSnapshot,
    Reservation,
)
from hybridroute.economics.pricing import Price, PriceTable
from hybridroute.economics.windows import Period, Window

__all__ = [
    "BudgetEvent",
    "CostLedger",
    "LedgerSnapshot",
    "Period",
    "Price",
    "PriceTable",
    "Reservation",
    "Window",
]
