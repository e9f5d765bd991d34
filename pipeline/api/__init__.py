"""The profile API: customer profiles and timelines read from ClickHouse."""
