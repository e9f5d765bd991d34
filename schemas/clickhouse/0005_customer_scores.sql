-- Per-customer scores (RFM, ABC, XYZ, LTV) materialised for the profile API.
--
-- RFM quintiles and ABC shares are ranks over all customers: computing them for one lookup means
-- a window over every profile (hundreds of milliseconds at a million profiles). A refreshable
-- materialized view recomputes the views of 0004 into this table every minute (the refresh swaps
-- the whole table atomically), and the API reads one row by the sort key.
-- Scores are therefore up to a minute behind the profile itself; a customer created since the
-- last refresh has no scores yet (the API answers null).
-- doc repeats the row as one JSON object: the API reads that single column, because on a point
-- read every extra column costs (measured on chDB at 1M rows: 25 typed columns ~12 ms of CPU,
-- one JSON column ~3 ms). Compact parts, 128-row granules and the light ZSTD(1) serve the same
-- point reads (less to decompress per lookup); the typed columns stay for dashboards (segment
-- counts without recomputing the views).
-- On a ClickHouse cluster, make the target Replicated and the view APPEND-less with a
-- coordinated refresh (ClickHouse >= 24.10), or run it on one replica.
CREATE TABLE IF NOT EXISTS {db}.customer_scores
(
    customer_id               String,
    as_of                     Date,
    currency                  LowCardinality(String),
    orders                    UInt32,
    recency_days              Nullable(Int32),
    frequency                 Nullable(UInt32),
    monetary                  Nullable(Decimal(18, 4)),
    r_score                   Nullable(UInt8),
    f_score                   Nullable(UInt8),
    m_score                   Nullable(UInt8),
    rfm_cell                  Nullable(String),
    rfm_segment               Nullable(String),
    abc_class                 Nullable(String),
    revenue_share             Nullable(Float64),
    cumulative_share          Nullable(Float64),
    xyz_class                 Nullable(String),
    cv_orders                 Nullable(Float64),
    cv_revenue                Nullable(Float64),
    orders_in_window          Nullable(UInt32),
    historical_ltv            Decimal(18, 4),
    avg_order_value           Decimal(18, 4),
    orders_per_year           Float64,
    expected_remaining_years  UInt8,
    predicted_ltv             Float64,
    refreshed_at              DateTime64(3, 'UTC'),
    doc                       String CODEC(ZSTD(1))
)
ENGINE = MergeTree
ORDER BY customer_id
SETTINGS index_granularity = 128, min_bytes_for_wide_part = 1000000000000,
         min_rows_for_wide_part = 1000000000000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.customer_scores_refresh
REFRESH EVERY 1 MINUTE
TO {db}.customer_scores
AS
SELECT
    *,
    formatRowNoNewline('JSONEachRow', as_of, currency, recency_days, frequency, monetary,
        r_score, f_score, m_score, rfm_cell, rfm_segment, abc_class, revenue_share,
        cumulative_share, xyz_class, cv_orders, cv_revenue, orders_in_window, historical_ltv,
        avg_order_value, orders_per_year, expected_remaining_years, predicted_ltv,
        refreshed_at) AS doc
FROM
(
    SELECT
        l.customer_id AS customer_id,
        l.as_of AS as_of,
        l.currency AS currency,
        toUInt32(l.orders) AS orders,
        r.recency_days AS recency_days,
        r.frequency AS frequency,
        r.monetary AS monetary,
        r.r_score AS r_score,
        r.f_score AS f_score,
        r.m_score AS m_score,
        r.rfm_cell AS rfm_cell,
        r.segment AS rfm_segment,
        a.abc_class AS abc_class,
        a.revenue_share AS revenue_share,
        a.cumulative_share AS cumulative_share,
        x.xyz_class AS xyz_class,
        x.cv_orders AS cv_orders,
        x.cv_revenue AS cv_revenue,
        x.orders_in_window AS orders_in_window,
        l.historical_ltv AS historical_ltv,
        l.avg_order_value AS avg_order_value,
        toFloat64(l.orders_per_year) AS orders_per_year,
        toUInt8(l.expected_remaining_years) AS expected_remaining_years,
        l.predicted_ltv AS predicted_ltv,
        now64(3, 'UTC') AS refreshed_at
    FROM {db}.customer_ltv AS l
    LEFT JOIN {db}.rfm AS r ON r.customer_id = l.customer_id
    LEFT JOIN {db}.abc AS a ON a.customer_id = l.customer_id
    LEFT JOIN {db}.xyz AS x ON x.customer_id = l.customer_id
    SETTINGS join_use_nulls = 1
);
