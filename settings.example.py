# streaming_api settings. Copy to settings.py (git-ignored) and change what you need.
# Precedence: these defaults < settings.py < environment (STREAMING_API_<NAME>, and plain DATABASE_URL).
# A bad value stops start-up with a message naming the setting.

# Address to bind. 127.0.0.1 keeps the service on this machine; serving beyond it takes --host.
HOST = "127.0.0.1"
PORT = 8080

# postgresql://user:password@host:5432/dbname. None starts the embedded PostgreSQL (no setup at all).
DATABASE_URL = None

# The embedded database and the generated JWT secret live here (relative paths are from this folder).
DATA_DIR = ".data"

# Rows `serve` seeds when the points table is missing or empty; also `seed`'s default.
ROWS = 500_000

# /chunked rows per page (one page = one query = one HTTP chunk) when the request has no page_size,
# and the largest page_size a request may ask for.
PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000

# asyncpg pool: connections kept open, and the most that may be open at once.
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 10

# HS* signing secret (at least 32 bytes). None generates a random one into DATA_DIR/jwt_secret
# (mode 0600) on first use, so tokens survive restarts. Prefer the environment for real secrets.
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

# DEBUG, INFO, WARNING or ERROR. INFO writes one access-log line per request with its timings.
LOG_LEVEL = "INFO"
