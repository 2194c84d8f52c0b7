"""PostgreSQL: the points table and its seeding, the export's statements, the pool and its lanes, and
the database to use (database_url, or the embedded server)."""
