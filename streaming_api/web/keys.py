"""Every key of the app's and the requests' typed state, in one place: what a running app holds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from ..db.lanes import Lanes
from ..db.sources import Sources
from ..export.count import RowCounter
from ..export.pages import PageQueries
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
# Set by the database cleanup context once the pool is open.
POOL = web.AppKey("pool", asyncpg.Pool)
LANES = web.AppKey("lanes", Lanes)
# Where exports read: the primary (LANES) and the read replicas.
SOURCES = web.AppKey("sources", Sources)
# Rows in the points table at start-up, and where they live (for the banner).
ROWS = web.AppKey("rows", int)
DATABASE = web.AppKey("database", str)
DATABASE_STATE = web.AppKey("database_state", DatabaseState)
QUERIES = web.AppKey("page_queries", PageQueries)
COUNTER = web.AppKey("row_counter", RowCounter)
STANDARD_SLOTS = web.AppKey("standard_slots", StandardSlots)
# The tasks serving requests right now, so shutdown can wait for them or cancel them.
IN_FLIGHT = web.AppKey("in_flight", set[asyncio.Task])
OBSERVER = web.AppKey("request_observer", RequestObserver)

TIMING = web.RequestKey("timing", RequestTiming)
CLAIMS = web.RequestKey("jwt_claims", dict)
