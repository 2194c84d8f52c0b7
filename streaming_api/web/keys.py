"""Every key of the app's and the requests' typed state, in one place: what a running app holds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from ..db.lanes import Lanes
from ..db.served import Catalog
from ..db.sources import Sources
from ..grants import Grant
from ..names import Pattern
from ..settings import Settings
from ..tokens import Keys
from .guards import StandardSlots
from .timing import RequestObserver, RequestTiming


@dataclass
class DatabaseState:
    """What the app's database did that outlives its start-up (the app's own keys are frozen by then)."""

    # Letting go of the database stopped the embedded server (this app was the last to use it).
    stopped: bool = False


SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("jwt_keys", Keys)
# What a token without a `tables` claim may read (the default_grant setting, parsed once).
DEFAULT_GRANT = web.AppKey("default_grant", tuple[Pattern, ...])
# Set by the database cleanup context once the pool is open.
POOL = web.AppKey("pool", asyncpg.Pool)
LANES = web.AppKey("lanes", Lanes)
# Where exports read: the primary (LANES) and the read replicas.
SOURCES = web.AppKey("sources", Sources)
# The served tables, as the catalog last said; and where they live (for the banner).
CATALOG = web.AppKey("catalog", Catalog)
DATABASE = web.AppKey("database", str)
DATABASE_STATE = web.AppKey("database_state", DatabaseState)
STANDARD_SLOTS = web.AppKey("standard_slots", StandardSlots)
# The tasks serving requests right now, so shutdown can wait for them or cancel them.
IN_FLIGHT = web.AppKey("in_flight", set[asyncio.Task])
OBSERVER = web.AppKey("request_observer", RequestObserver)

TIMING = web.RequestKey("timing", RequestTiming)
CLAIMS = web.RequestKey("jwt_claims", dict)
# What the token (or link) lets the request read, and the role it reads as.
GRANT = web.RequestKey("grant", Grant)
