"""An export: a request's parameters (request), how rows are written (formats), and the pages that
carry them out of PostgreSQL as the bytes both endpoints send (pages)."""
