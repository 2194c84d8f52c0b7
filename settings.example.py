# streaming_api settings. Copy to settings.py (git-ignored) and change what you need.
# Precedence: these defaults < settings.py < environment (STREAMING_API_<NAME>, and plain DATABASE_URL).
# A bad value, an unknown UPPER_CASE name or a line that fails to run stops start-up with one line naming
# it; a lowercase name that looks like a setting (port = 9000) is ignored with a warning naming PORT.

# Address to bind. 127.0.0.1 keeps the service on this machine; serving beyond it takes --host.
HOST = "127.0.0.1"
PORT = 8080

# Server processes sharing the port (the kernel spreads connections among them: SO_REUSEPORT). 1 is one
# process; "auto" one per core. The embedded database is started once for all of them. Each process has
# its own pool (pool_max_size connections) and its own /standard slots (standard_max_concurrency).
WORKERS = 1

# postgresql://user:password@host:5432/dbname. None starts the embedded PostgreSQL (no setup at all).
# A database given here is only ever read: no table is created in it, nothing is seeded.
DATABASE_URL = None

# The tables and views served, by name or pattern, as psql's \dt takes them: "public.orders", "sales.*",
# '"Mixed Case".orders' (double quotes keep case and dots; * and ? are wildcards). A name without a
# schema means the table the search path finds. In the environment: STREAMING_API_TABLES="public.orders,
# sales.*". Anything else is a 404. A name given exactly that is not in the database stops start-up; a
# pattern that matches nothing is a warning. The first entry, if it names one table, is what the bare
# /chunked and /standard serve.
TABLES = ("points",)

# How often the served tables are read again from PostgreSQL's catalog (new columns, new tables a
# pattern matches, tables dropped), in seconds; 0 reads it at start-up only.
CATALOG_REFRESH = 10.0

# Read replicas (hot standbys) exports read from, spread across them: a list of postgresql:// URLs, or in
# the environment STREAMING_API_REPLICA_URLS, comma-separated. The primary serves when none answers; a
# replica that fails is set aside and tried again later. Seeding only ever runs on the primary.
REPLICA_URLS = ()

# The embedded database and the generated JWT secret live here (relative paths are from this folder).
DATA_DIR = ".data"

# Rows the embedded database's demo table (points) gets on its first start; also `seed`'s default.
ROWS = 500_000

# /chunked rows per page (one page = one query = one HTTP chunk) when the request has no page_size,
# and the largest page_size a request may ask for.
PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000

# /chunked Arrow rows per page (one record batch) when the request has no page_size, fewer where that
# would pass about PAGE_BYTES / 16 (512 KB): Arrow's rows cost a tenth of text's to send, its pages as much,
# so bigger pages bring it near a direct connection's speed (docs/results.md).
ARROW_PAGE_SIZE = 10_000

# /chunked's first page is the next this-many ids (0: page_size), so the first bytes leave sooner: a
# 100-row page takes PostgreSQL a tenth of the time, which matters most under load; and as an id range it
# needs no plan before it. At most this many rows, fewer where the ids have gaps.
FIRST_PAGE_SIZE = 100

# About the most bytes a /chunked page holds: where rows are wide (a document, an image), a page holds
# fewer than PAGE_SIZE rows, so the server's memory stays flat whatever a row weighs. A page waiting its
# turn keeps at most this much of its output (then PostgreSQL waits too).
PAGE_BYTES = 8 * 1024 * 1024

# asyncpg pool: connections kept open, and the most that may be open at once.
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 10

# HS* signing secret (at least 32 bytes): its text is the key. None generates a random one into
# DATA_DIR/jwt_secret (mode 0600) on first use, so tokens survive restarts; that file's text (less its
# newline) is the key in the same way, so it can be copied here. Prefer the environment for real secrets.
# An older version's file (64 hex digits) still verifies the tokens it signed.
JWT_SECRET = None

# Algorithms a token may use: an explicit list, never "none"; HS* and RS*/ES* cannot be mixed.
JWT_ALGORITHMS = ("HS256",)

# PEM files for RS*/ES*: the public key verifies tokens; the private key lets `run.py token` sign.
JWT_PUBLIC_KEY_FILE = None
JWT_PRIVATE_KEY_FILE = None

# When set, tokens must carry this aud / iss claim.
JWT_AUDIENCE = None
JWT_ISSUER = None

# Clock skew tolerated on exp, nbf and iat, in seconds.
JWT_LEEWAY = 30

# Lifetime of the tokens `run.py token` and the start-up banner mint, in seconds.
TOKEN_TTL = 3600

# What a token without a `tables` claim may read: patterns as in TABLES. "*.*" is every served table;
# () is nothing, so that every token must say what it reads (run.py token --tables orders,points).
# A table served but not granted is a 403; docs/grants.md.
DEFAULT_GRANT = ("*.*",)

# Run each request as the PostgreSQL role its token's `role` claim names (SET LOCAL ROLE in every
# transaction), so the database's own GRANTs and row-level security policies decide what it reads. The
# service's login must be a member of each such role. False: a token that names a role is refused (403).
TOKEN_ROLES = False

# DEBUG, INFO, WARNING or ERROR. INFO writes one access-log line per request with its timings.
LOG_LEVEL = "INFO"

# /standard builds each whole body in memory: at most this many are built at once, and further
# requests get 503 with Retry-After at once instead of queueing (memory stays bounded).
STANDARD_MAX_CONCURRENCY = 2

# /standard answers 413 (pointing to /chunked, which streams any size) for a request that would return
# more rows than this, or a body of more bytes than this, so one request cannot buffer a huge table.
STANDARD_MAX_ROWS = 1_000_000
STANDARD_MAX_BYTES = 256 * 1024 * 1024

# PostgreSQL statement_timeout for every query, in seconds: a stuck or runaway query ends the request.
STATEMENT_TIMEOUT = 30.0

# The longest one /standard or /chunked request may take in all, in seconds: 503 if it runs out
# before the headers, an aborted transfer after. A client cut off resumes with after_id.
REQUEST_DEADLINE = 600.0

# /chunked's pages all read one snapshot of the database, the moment a single COPY at the export's start
# would read (what /standard gives), while writes go on: a transaction of the export's own holds it open
# (one more connection per export) and holds back vacuum meanwhile. Responses name it (X-Snapshot); a
# resume that presents it (snapshot=) continues in it, on any worker, for SNAPSHOT_GRACE seconds after
# the export ends. At most MAX_SNAPSHOTS held per process (more exports wait for one). False: each page
# reads the database as it is when it runs (a request can ask that with snapshot=off).
SNAPSHOTS = True
SNAPSHOT_GRACE = 60.0
MAX_SNAPSHOTS = 32

# A client that takes none of the pending response bytes for this long is dropped, in seconds
# (a stream holds no database connection while it waits, but it does hold a page in memory).
SEND_TIMEOUT = 60.0

# On SIGTERM: stop accepting, let in-flight requests finish for up to this many seconds, abort the rest.
SHUTDOWN_TIMEOUT = 30.0

# A client must send its whole request head within this many seconds of connecting (or of starting its
# next request on a kept-alive connection), else it gets 408 and is closed: clients that trickle header
# bytes to hold connections open are let go.
REQUEST_HEAD_TIMEOUT = 10.0

# Open client connections at most. 0 takes as many as the open-file limit leaves room for (the server
# raises that limit as far as the system allows at start-up). At the cap the connection idle longest
# (no request head yet, or between requests) is closed to make room; only when every one is busy with a
# request does a new connection get 503.
MAX_CONNECTIONS = 0

# Content codings offered to clients that ask for them (Accept-Encoding), in order of preference:
# "zstd" (about 7x smaller NDJSON, cheap) and "gzip" (for clients without zstd). () turns compression off.
# /chunked compresses and flushes page by page, so the first rows still arrive (and decode) at once.
COMPRESSION = ("zstd", "gzip")
ZSTD_LEVEL = 1  # -7..22; 1 is both the fastest and the tightest on these rows (measured)
GZIP_LEVEL = 1  # 0..3 (ISA-L)

# Reverse proxies (addresses or networks, e.g. ("127.0.0.1",) or ("10.0.0.0/8",)) whose X-Forwarded-For
# header names the client in the access log. From anyone else the header is ignored (anyone can send it).
TRUSTED_PROXIES = ()

# Origins a browser page may call the API from, e.g. ("https://app.example.com",) or ("*",).
# Empty (the default) sends no CORS headers: browsers on other origins cannot read responses.
CORS_ORIGINS = ()

# Prometheus figures at /metrics: requests by endpoint, format and status, time to first byte and total
# time, rows and bytes sent, streams in flight, process memory. Off removes the route (404).
METRICS_ENABLED = True
# True puts /metrics behind the same JWT as /standard and /chunked (for a scraper that can send one).
METRICS_REQUIRE_TOKEN = False
