-- Latest 360 profile per customer, written by the profile processor through
-- cdp.profiles.changes (pipeline/profile/stage.py) and the profiles sink.
-- Columns are pipeline.profile.view.PROFILE_COLUMNS (same names, types and order), plus
-- merged_from: the customers folded into this one (transitively), for the API's profile JSON.
-- ReplacingMergeTree(version, is_deleted): every change is a full snapshot with a version that
-- grows per customer (input offset << 16 | index), so re-inserting a batch after a crash keeps
-- one row, and a customer merged into another is written once more with is_deleted = 1.
-- Reads take FINAL (or argMax(col, version) and is_deleted = 0).
CREATE TABLE IF NOT EXISTS {db}.profiles
(
    customer_id           String,
    identities            Map(LowCardinality(String), Array(String)) CODEC(ZSTD(3)),
    user_ids              Array(String),
    emails                Array(String),
    phones                Array(String),
    traits                String CODEC(ZSTD(3)),
    traits_updated_at     Map(String, DateTime64(3, 'UTC')) CODEC(ZSTD(3)),
    events                UInt64,
    page_views            UInt64,
    screen_views          UInt64,
    sessions              UInt32,
    time_on_site_s        UInt64,
    first_seen            Nullable(DateTime64(3, 'UTC')),
    last_seen             Nullable(DateTime64(3, 'UTC')),
    cart_adds             UInt32,
    checkouts             UInt32,
    product_views         UInt32,
    orders                UInt32,
    currency              LowCardinality(String),
    revenue               Decimal(18, 4),
    gross_revenue         Decimal(18, 4),
    refunded_amount       Decimal(18, 4),
    refunds               UInt32,
    avg_order_value       Decimal(18, 4),
    first_order_at        Nullable(DateTime64(3, 'UTC')),
    last_order_at         Nullable(DateTime64(3, 'UTC')),
    products_bought       Map(String, UInt32),
    categories_bought     Map(String, UInt32),
    devices               Map(LowCardinality(String), UInt32),
    browsers              Map(LowCardinality(String), UInt32),
    os                    Map(LowCardinality(String), UInt32),
    first_touch_channel   LowCardinality(String),
    first_touch_source    String,
    first_touch_medium    String,
    first_touch_campaign  String,
    first_touch_referrer  String,
    first_touch_at        Nullable(DateTime64(3, 'UTC')),
    last_touch_channel    LowCardinality(String),
    last_touch_source     String,
    last_touch_medium     String,
    last_touch_campaign   String,
    last_touch_referrer   String,
    last_touch_at         Nullable(DateTime64(3, 'UTC')),
    email_opens           UInt32,
    email_clicks          UInt32,
    form_submits          UInt32,
    reviews               UInt32,
    app_opens             UInt32,
    nps_promoters         UInt32,
    nps_passives          UInt32,
    nps_detractors        UInt32,
    nps_last_score        Nullable(UInt8),
    nps_last_at           Nullable(DateTime64(3, 'UTC')),
    subscriptions         Array(String),
    consent               Array(LowCardinality(String)),
    consent_updated_at    Nullable(DateTime64(3, 'UTC')),
    last_pages            Array(String) CODEC(ZSTD(3)),
    bot_events            UInt64,
    merged_from           Array(String) CODEC(ZSTD(3)),
    version               UInt64,
    is_deleted            UInt8
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY customer_id;
