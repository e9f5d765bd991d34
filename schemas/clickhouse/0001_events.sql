-- Every accepted event with the customer it resolved to, enriched at the collector.
-- Sort key led by what the profile API and dashboards filter on (customer, then time);
-- ReplacingMergeTree on the full sort key makes re-inserting a batch after a crash harmless:
-- rows with the same (customer_id, timestamp, event_id) collapse on merge, and reads that must
-- be exact use FINAL or GROUP BY event_id.
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id      String,
    customer_id   String,
    type          LowCardinality(String),
    event         String,
    timestamp     DateTime64(3, 'UTC'),
    received_at   DateTime64(3, 'UTC'),
    anonymous_id  String,
    user_id       String,
    source        LowCardinality(String),
    properties    String CODEC(ZSTD(3)),
    traits        String CODEC(ZSTD(3)),
    page_url      String CODEC(ZSTD(3)),
    page_path     String,
    referrer      String CODEC(ZSTD(3)),
    utm_source    LowCardinality(String),
    utm_medium    LowCardinality(String),
    utm_campaign  String,
    device_type   LowCardinality(String),
    os            LowCardinality(String),
    browser       LowCardinality(String),
    channel       LowCardinality(String),
    is_bot        Bool,
    consent       Array(LowCardinality(String)),
    ip            String,
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (customer_id, timestamp, event_id);

-- Identifier → customer. The newest version wins (argMax(customer_id, version) or FINAL).
CREATE TABLE IF NOT EXISTS {db}.identities
(
    id_type      LowCardinality(String),
    id_value     String,
    customer_id  String,
    first_seen   DateTime64(3, 'UTC'),
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (id_type, id_value);

-- Merge records: the loser's lookups answer the survivor.
CREATE TABLE IF NOT EXISTS {db}.customer_merges
(
    loser        String,
    survivor     String,
    reason       String,
    merged_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (loser, survivor);
