"""Batched writers from Kafka into ClickHouse."""
