"""The comparison benchmark: /standard and /chunked side by side, against PostgreSQL's own export speed.

runner (the plan), wire (the timed raw HTTP client), floor (COPY of the same rows), server (the server
process the bench owns), meters (CPU, RSS, /metrics), probe (/metrics and /healthz pollers), verify
(every body checked), results (what is kept), stats (the figures), report (the table), plot (the PNG).
The command line is cli.bench.
"""
