-- Key-value lookup tables for the profile API: one query per lookup, point reads by key.
--
-- Why: every MergeTree point read costs chDB a few milliseconds of CPU whatever the granule size
-- (analysis, part and mark handling, one granule per part), and a lookup by email needed four of
-- them (identities, profile_documents, customer_scores, customer_merges; ~20 ms of CPU per
-- request at 1M profiles, p99 36 ms). EmbeddedRocksDB tables answer `key = x` with a RocksDB
-- get, and a LEFT JOIN on their key is a direct key-value join (one multi-get per block, no hash
-- table), so the whole lookup is one query of chained direct joins: identifier -> customer ->
-- one merge hop -> profile document, scores document, and the target's own merge record
-- (pipeline/api/queries.py). Measured at 1M profiles, same run, in-process: ~2.5x less CPU.
--
-- They are copies kept by materialized views, so every writer of the source tables (the sink,
-- backfills, tests) keeps them current. RocksDB keeps the last write of a key, not the newest
-- version like ReplacingMergeTree, so each view joins the incoming block to the stored row and
-- only writes a key when its version is >= the stored one (a replayed older row changes nothing;
-- an equal version replaces, like ReplacingMergeTree's last insert).
-- Single-node tables: on a ClickHouse cluster, create them on every replica that serves the API
-- (they are rebuilt from the replicated sources by the backfills below).
-- Rows deleted from a source table (not the is_deleted convention) must be deleted here too:
-- `DELETE FROM {db}.profile_lookup WHERE customer_id = '...'`.

-- identities (ORDER BY id_type, id_value; newest version wins) by 'id_type:id_value'.
-- Type names are [a-z][a-z0-9_]* (IdentityConfig), so the ':' is unambiguous.
CREATE TABLE IF NOT EXISTS {db}.identity_lookup
(
    key          String,
    customer_id  String,
    version      UInt64
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY key;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.identity_lookup_mv
TO {db}.identity_lookup
AS
SELECT n.key AS key, n.new_customer_id AS customer_id, n.new_version AS version
FROM
(
    SELECT
        concat(id_type, ':', id_value) AS key,
        argMax(customer_id, version) AS new_customer_id,
        max(version) AS new_version
    FROM {db}.identities
    GROUP BY key
) AS n
LEFT JOIN {db}.identity_lookup AS o ON o.key = n.key
WHERE n.new_version >= o.version;

-- customer_merges (a loser's survivor; the latest merged_at wins) by loser.
CREATE TABLE IF NOT EXISTS {db}.merge_lookup
(
    loser      String,
    survivor   String,
    merged_at  DateTime64(3, 'UTC')
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY loser;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.merge_lookup_mv
TO {db}.merge_lookup
AS
SELECT n.loser AS loser, n.new_survivor AS survivor, n.new_merged_at AS merged_at
FROM
(
    SELECT loser, argMax(survivor, merged_at) AS new_survivor, max(merged_at) AS new_merged_at
    FROM {db}.customer_merges
    GROUP BY loser
) AS n
LEFT JOIN {db}.merge_lookup AS o ON o.loser = n.loser
WHERE n.new_merged_at >= o.merged_at;

-- The newest profiles row per customer as one JSON array of values (JSONCompactEachRow, in
-- the order of pipeline.api.queries.PROFILE_FIELDS): without the key names a document is ~2.7x
-- smaller (466 vs 1,278 bytes on the bench's profiles), which is what RocksDB stores.
-- Replaces profile_documents (0006, dropped by 0008): one row per customer instead of one
-- per version, read by a key-value join instead of a MergeTree read.
CREATE TABLE IF NOT EXISTS {db}.profile_lookup
(
    customer_id  String,
    version      UInt64,
    is_deleted   UInt8,
    doc          String
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY customer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.profile_lookup_mv
TO {db}.profile_lookup
AS
SELECT
    n.customer_id AS customer_id,
    n.new_version AS version,
    n.new_is_deleted AS is_deleted,
    n.new_doc AS doc
FROM
(
    SELECT
        customer_id,
        max(version) AS new_version,
        argMax(is_deleted, version) AS new_is_deleted,
        argMax(formatRowNoNewline('JSONCompactEachRow',
            customer_id, identities, traits, traits_updated_at, events, page_views, screen_views,
            sessions, time_on_site_s, first_seen, last_seen, cart_adds, checkouts, product_views,
            orders, currency, revenue, gross_revenue, refunded_amount, refunds, avg_order_value,
            first_order_at, last_order_at, products_bought, categories_bought, devices, browsers,
            os, first_touch_channel, first_touch_source, first_touch_medium, first_touch_campaign,
            first_touch_referrer, first_touch_at, last_touch_channel, last_touch_source,
            last_touch_medium, last_touch_campaign, last_touch_referrer, last_touch_at,
            email_opens, email_clicks, form_submits, reviews, app_opens, nps_promoters,
            nps_passives, nps_detractors, nps_last_score, nps_last_at, subscriptions, consent,
            consent_updated_at, last_pages, bot_events, merged_from, is_deleted),
            version) AS new_doc
    FROM {db}.profiles
    GROUP BY customer_id
) AS n
LEFT JOIN {db}.profile_lookup AS o ON o.customer_id = n.customer_id
WHERE n.new_version >= o.version;

-- customer_scores.doc by customer. customer_scores is rebuilt by a refreshable view every
-- minute (0005) with a table swap, which no materialized view sees; this view copies it after
-- each of those refreshes (DEPENDS ON) and swaps its own table the same way, so customers that
-- left the scores leave the lookup too. ~4 s of CPU per refresh at 1M customers (the scores
-- refresh itself takes ~10-25 s); `SYSTEM REFRESH VIEW` of customer_scores_refresh does not
-- start it: refresh this one after it (tests/integration/api_support.refresh_scores).
CREATE TABLE IF NOT EXISTS {db}.score_lookup
(
    customer_id  String,
    doc          String
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY customer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.score_lookup_refresh
REFRESH EVERY 1 MINUTE DEPENDS ON {db}.customer_scores_refresh
TO {db}.score_lookup
AS
SELECT customer_id, doc
FROM {db}.customer_scores;

-- Backfills of what was written before the views existed, through the same version guard (a
-- row the views wrote meanwhile is not overwritten by an older one).
INSERT INTO {db}.identity_lookup
SELECT n.key, n.new_customer_id, n.new_version
FROM
(
    SELECT
        concat(id_type, ':', id_value) AS key,
        argMax(customer_id, version) AS new_customer_id,
        max(version) AS new_version
    FROM {db}.identities
    GROUP BY key
) AS n
LEFT JOIN {db}.identity_lookup AS o ON o.key = n.key
WHERE n.new_version >= o.version;

INSERT INTO {db}.merge_lookup
SELECT n.loser, n.new_survivor, n.new_merged_at
FROM
(
    SELECT loser, argMax(survivor, merged_at) AS new_survivor, max(merged_at) AS new_merged_at
    FROM {db}.customer_merges
    GROUP BY loser
) AS n
LEFT JOIN {db}.merge_lookup AS o ON o.loser = n.loser
WHERE n.new_merged_at >= o.merged_at;

INSERT INTO {db}.profile_lookup
SELECT n.customer_id, n.new_version, n.new_is_deleted, n.new_doc
FROM
(
    SELECT
        customer_id,
        max(version) AS new_version,
        argMax(is_deleted, version) AS new_is_deleted,
        argMax(formatRowNoNewline('JSONCompactEachRow',
            customer_id, identities, traits, traits_updated_at, events, page_views, screen_views,
            sessions, time_on_site_s, first_seen, last_seen, cart_adds, checkouts, product_views,
            orders, currency, revenue, gross_revenue, refunded_amount, refunds, avg_order_value,
            first_order_at, last_order_at, products_bought, categories_bought, devices, browsers,
            os, first_touch_channel, first_touch_source, first_touch_medium, first_touch_campaign,
            first_touch_referrer, first_touch_at, last_touch_channel, last_touch_source,
            last_touch_medium, last_touch_campaign, last_touch_referrer, last_touch_at,
            email_opens, email_clicks, form_submits, reviews, app_opens, nps_promoters,
            nps_passives, nps_detractors, nps_last_score, nps_last_at, subscriptions, consent,
            consent_updated_at, last_pages, bot_events, merged_from, is_deleted),
            version) AS new_doc
    FROM {db}.profiles
    GROUP BY customer_id
) AS n
LEFT JOIN {db}.profile_lookup AS o ON o.customer_id = n.customer_id
WHERE n.new_version >= o.version;

INSERT INTO {db}.score_lookup
SELECT customer_id, doc
FROM {db}.customer_scores;
