"""ClickHouse access: the client factory and the SQL migrations."""
