-- The latest profile as one JSON document per version, for the profile API's point lookups.
--
-- Why a second copy: a point read of `profiles` pays per column (analysis, marks, one block per
-- column file), and the API needs about 60 of them. Measured on chDB with 1M profiles: ~25 ms
-- of CPU per lookup on `profiles`, ~4 ms on this table (one JSON column, compact parts: one
-- file per part; 128-row granules and ZSTD(1): little to decompress per lookup). The goal is
-- p99 <= 20 ms for the whole request.
-- A materialized view renders each row inserted into `profiles` (the sink's batches) into
-- this table, so it is never behind; the document keeps the column names and ClickHouse's
-- JSON value formats (pipeline/api/render.py reads them back).
-- Versions and deletions follow `profiles`: newest version wins, is_deleted = 1 hides it.
CREATE TABLE IF NOT EXISTS {db}.profile_documents
(
    customer_id  String,
    version      UInt64,
    is_deleted   UInt8,
    doc          String CODEC(ZSTD(1))
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY customer_id
SETTINGS index_granularity = 128, min_bytes_for_wide_part = 1000000000000,
         min_rows_for_wide_part = 1000000000000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.profile_documents_mv
TO {db}.profile_documents
AS
SELECT
    customer_id,
    version,
    is_deleted,
    formatRowNoNewline('JSONEachRow', customer_id, identities, traits, traits_updated_at,
        events, page_views, screen_views, sessions, time_on_site_s, first_seen, last_seen,
        cart_adds, checkouts, product_views, orders, currency, revenue, gross_revenue,
        refunded_amount, refunds, avg_order_value, first_order_at, last_order_at,
        products_bought, categories_bought, devices, browsers, os, first_touch_channel,
        first_touch_source, first_touch_medium, first_touch_campaign, first_touch_referrer,
        first_touch_at, last_touch_channel, last_touch_source, last_touch_medium,
        last_touch_campaign, last_touch_referrer, last_touch_at, email_opens, email_clicks,
        form_submits, reviews, app_opens, nps_promoters, nps_passives, nps_detractors,
        nps_last_score, nps_last_at, subscriptions, consent, consent_updated_at, last_pages,
        bot_events, merged_from, is_deleted) AS doc
FROM {db}.profiles;

-- Rows written before this migration (the view sees only new inserts). A row inserted while
-- both run lands twice with the same version: ReplacingMergeTree keeps one.
INSERT INTO {db}.profile_documents
SELECT
    customer_id,
    version,
    is_deleted,
    formatRowNoNewline('JSONEachRow', customer_id, identities, traits, traits_updated_at,
        events, page_views, screen_views, sessions, time_on_site_s, first_seen, last_seen,
        cart_adds, checkouts, product_views, orders, currency, revenue, gross_revenue,
        refunded_amount, refunds, avg_order_value, first_order_at, last_order_at,
        products_bought, categories_bought, devices, browsers, os, first_touch_channel,
        first_touch_source, first_touch_medium, first_touch_campaign, first_touch_referrer,
        first_touch_at, last_touch_channel, last_touch_source, last_touch_medium,
        last_touch_campaign, last_touch_referrer, last_touch_at, email_opens, email_clicks,
        form_submits, reviews, app_opens, nps_promoters, nps_passives, nps_detractors,
        nps_last_score, nps_last_at, subscriptions, consent, consent_updated_at, last_pages,
        bot_events, merged_from, is_deleted) AS doc
FROM {db}.profiles;
