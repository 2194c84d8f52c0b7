"""The points table's columns: the one thing the server, the client and the benchmark all share.

Names and order are the contract every format writes (CSV header, JSON keys); db.schema defines the
table from the same list, so the two cannot drift apart.
"""

from __future__ import annotations

# In table order. `id` is the keyset: exports run in id order and resume after an id.
COLUMNS: tuple[str, ...] = ("id", "x", "y", "label", "value", "recorded_at")
KEY = "id"
