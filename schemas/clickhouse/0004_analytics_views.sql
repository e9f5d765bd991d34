-- Analytics views over the latest profile versions and the order events.
--
-- Plain views: every read recomputes them, so they are always exact for dashboards and ad-hoc
-- analysis. The profile API does not read them per request (cross-customer windows over all
-- profiles are far too slow for a point lookup): 0005_customer_scores.sql materialises the
-- per-customer scores into a small table refreshed every minute.
--
-- Rules and thresholds (also in the README, "Profiles API and analytics"):
-- * live_profiles: latest version per customer (FINAL), not erased (is_deleted = 0), and not a
--   customer that was merged into another one (its history is folded into the survivor, so
--   counting it again would double it).
-- * All "as of" dates are the current UTC date, toDate(now(), 'UTC').
-- * Money is the profile's net revenue in its main currency. The views assume one reporting
--   currency; with several, filter or group by the currency column.
-- * Orders in events: track events named "Order Completed" (any case), bots excluded, counted
--   once per order_id (an order without order_id is its own order), attributed to the final
--   survivor of merges.

-- The newest non-deleted version of every customer that is still its own customer.
-- WHERE after FINAL is applied to the merged rows (is_deleted is not a sort key column).
CREATE VIEW IF NOT EXISTS {db}.live_profiles AS
SELECT *
FROM {db}.profiles FINAL
WHERE is_deleted = 0
  AND customer_id NOT IN (SELECT loser FROM {db}.customer_merges);

-- loser → final survivor, following merge chains (A → B, later B → C gives A → C).
-- Bounded to 16 hops so a corrupt cycle cannot run away.
CREATE VIEW IF NOT EXISTS {db}.customer_survivors AS
WITH RECURSIVE
    direct AS (
        SELECT loser, argMax(survivor, merged_at) AS survivor
        FROM {db}.customer_merges
        GROUP BY loser
    ),
    chain AS (
        SELECT loser, survivor, 1 AS hops FROM direct
        UNION ALL
        SELECT chain.loser, direct.survivor, chain.hops + 1
        FROM chain
        INNER JOIN direct ON chain.survivor = direct.loser
        WHERE chain.hops < 16
    )
SELECT loser, argMax(survivor, hops) AS survivor, max(hops) AS chain_hops
FROM chain
GROUP BY loser;

-- One row per order (deduplicated by order_id, earliest report wins, as in the profile
-- aggregation), owned by the customer the order belongs to now.
-- amount: properties.revenue, else properties.total (numbers or numeric strings), else 0.
CREATE VIEW IF NOT EXISTS {db}.order_events AS
SELECT
    customer_id,
    order_key,
    min(timestamp) AS ordered_at,
    argMin(amount, (timestamp, event_id)) AS amount
FROM
(
    SELECT
        if(s.survivor != '', s.survivor, e.customer_id) AS customer_id,
        e.event_id AS event_id,
        e.timestamp AS timestamp,
        if(
            JSONType(e.properties, 'order_id') = 'String',
            JSONExtractString(e.properties, 'order_id'),
            JSONExtractRaw(e.properties, 'order_id')
        ) AS raw_order_id,
        if(raw_order_id != '', raw_order_id, concat('event:', e.event_id)) AS order_key,
        ifNull(
            coalesce(
                toFloat64OrNull(trim(BOTH '"' FROM JSONExtractRaw(e.properties, 'revenue'))),
                toFloat64OrNull(trim(BOTH '"' FROM JSONExtractRaw(e.properties, 'total')))
            ),
            0
        ) AS amount
    FROM {db}.events AS e
    LEFT JOIN {db}.customer_survivors AS s ON e.customer_id = s.loser
    WHERE e.type = 'track' AND lower(e.event) = 'order completed' AND NOT e.is_bot
)
GROUP BY customer_id, order_key;

-- RFM over live customers with at least one order.
-- recency_days: whole UTC days from the last order to today; frequency: orders;
-- monetary: net revenue. Scores are quintiles by rank, 1 (worst) to 5 (best):
--   score = 1 + floor(5 * (rank - 1) / n)
-- where rank is the 1-based position in ascending "goodness" (recency descending, frequency and
-- monetary ascending) and equal values share the lowest rank (rank(), not row_number()), so two
-- customers with the same figure always get the same score. This is ntile(5) made tie-stable:
-- plain ntile would split a run of equal values (say all one-order customers) across scores
-- by an arbitrary tie-breaker.
-- Segments, first matching rule wins (R, F, M are the scores):
--   Champions    R >= 4 and F >= 4 and M >= 4
--   Loyal        R >= 3 and F >= 4
--   New          R >= 4 and F = 1
--   Potential    R >= 3 (and F <= 3)
--   At Risk      R <= 2 and F >= 3
--   Hibernating  R = 2 (and F <= 2)
--   Lost         R = 1 (and F <= 2)
CREATE VIEW IF NOT EXISTS {db}.rfm AS
WITH
    base AS (
        SELECT
            customer_id,
            currency,
            toDate(now(), 'UTC') AS as_of,
            toInt32(greatest(
                dateDiff('day', toDate(assumeNotNull(last_order_at), 'UTC'), as_of), 0
            )) AS recency_days,
            toUInt32(orders) AS frequency,
            revenue AS monetary
        FROM {db}.live_profiles
        WHERE orders >= 1 AND last_order_at IS NOT NULL
    ),
    ranked AS (
        SELECT
            *,
            count() OVER () AS n,
            rank() OVER (ORDER BY recency_days DESC) AS r_rank,
            rank() OVER (ORDER BY frequency ASC) AS f_rank,
            rank() OVER (ORDER BY monetary ASC) AS m_rank
        FROM base
    ),
    scored AS (
        SELECT
            customer_id,
            currency,
            as_of,
            recency_days,
            frequency,
            monetary,
            toUInt8(1 + intDiv(5 * (r_rank - 1), n)) AS r_score,
            toUInt8(1 + intDiv(5 * (f_rank - 1), n)) AS f_score,
            toUInt8(1 + intDiv(5 * (m_rank - 1), n)) AS m_score
        FROM ranked
    )
SELECT
    *,
    concat(toString(r_score), toString(f_score), toString(m_score)) AS rfm_cell,
    multiIf(
        r_score >= 4 AND f_score >= 4 AND m_score >= 4, 'Champions',
        r_score >= 3 AND f_score >= 4, 'Loyal',
        r_score >= 4 AND f_score = 1, 'New',
        r_score >= 3, 'Potential',
        f_score >= 3, 'At Risk',
        r_score = 2, 'Hibernating',
        'Lost'
    ) AS segment
FROM scored;

-- ABC by share of net revenue over live customers with at least one order.
-- Customers are ranked by revenue (descending, ties by customer_id); share_before is the
-- cumulative revenue share of everyone ranked above. Class by where the customer's band starts:
--   A  share_before < 80 %     (the top customers who together make the first 80 %)
--   B  share_before < 95 %     (the next 15 %)
--   C  the rest, and every customer with zero or negative net revenue
-- (Starting bands rather than ending ones keeps the customer who crosses 80 % in A, so a
-- single dominant customer is A, not B.)
-- Shares are compared in exact Decimal arithmetic; the Float64 columns are for display.
CREATE VIEW IF NOT EXISTS {db}.abc AS
WITH
    base AS (
        SELECT
            customer_id,
            currency,
            revenue,
            greatest(revenue, toDecimal64(0, 4)) AS positive_revenue
        FROM {db}.live_profiles
        WHERE orders >= 1
    ),
    ranked AS (
        SELECT
            *,
            sum(positive_revenue) OVER () AS total_revenue,
            sum(positive_revenue) OVER (
                ORDER BY revenue DESC, customer_id ASC
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
            ) AS revenue_before
        FROM base
    )
SELECT
    customer_id,
    currency,
    revenue,
    total_revenue,
    if(total_revenue > 0, toFloat64(positive_revenue) / toFloat64(total_revenue), 0)
        AS revenue_share,
    if(total_revenue > 0, toFloat64(revenue_before) / toFloat64(total_revenue), 0)
        AS share_before,
    if(total_revenue > 0,
       toFloat64(revenue_before + positive_revenue) / toFloat64(total_revenue), 0)
        AS cumulative_share,
    multiIf(
        positive_revenue <= 0, 'C',
        revenue_before * 100 < total_revenue * 80, 'A',
        revenue_before * 100 < total_revenue * 95, 'B',
        'C'
    ) AS abc_class
FROM ranked;

-- XYZ by regularity of monthly purchases over the last 12 calendar months (the current month
-- and the 11 before it), months without orders counting as 0.
-- For a customer with monthly order counts c_1..c_12, s = sum c, q = sum c^2, N = 12:
--   cv_orders = stddev_pop / mean = sqrt(N*q - s^2) / s
--   X  cv <= 0.5   (steady)     exactly: 4 * (N*q - s^2) <= s^2
--   Y  cv <= 1.0   (variable)   exactly:      N*q - s^2  <= s^2
--   Z  cv >  1.0   (irregular)
-- The classes are decided in integer arithmetic so that the boundaries are exact;
-- cv_revenue is the same statistic over monthly order amounts, for information.
-- Customers without an order in the window have no row.
CREATE VIEW IF NOT EXISTS {db}.xyz AS
WITH
    toDate(now(), 'UTC') AS today_utc,
    addMonths(toStartOfMonth(today_utc), -11) AS window_start
SELECT
    customer_id,
    today_utc AS as_of,
    toUInt32(12) AS months,
    toUInt32(s) AS orders_in_window,
    sqrt(toFloat64(12 * q - s * s)) / s AS cv_orders,
    if(r > 0, sqrt(greatest(12 * r2 - r * r, 0)) / r, NULL) AS cv_revenue,
    multiIf(4 * (12 * q - s * s) <= s * s, 'X', 12 * q - s * s <= s * s, 'Y', 'Z') AS xyz_class
FROM
(
    SELECT
        customer_id,
        toInt64(sum(month_orders)) AS s,
        toInt64(sum(month_orders * month_orders)) AS q,
        sum(month_amount) AS r,
        sum(month_amount * month_amount) AS r2
    FROM
    (
        SELECT
            customer_id,
            toStartOfMonth(toDate(ordered_at, 'UTC')) AS month,
            count() AS month_orders,
            sum(amount) AS month_amount
        FROM {db}.order_events
        WHERE toDate(ordered_at, 'UTC') BETWEEN window_start AND today_utc
          AND customer_id IN (SELECT customer_id FROM {db}.live_profiles)
        GROUP BY customer_id, month
    )
    GROUP BY customer_id
);

-- Cohort retention: customers grouped by the month of their first order; for each later month,
-- how many of them ordered in it. months_since_first = 0 is the cohort itself (retention 1).
-- Computed from order events (not profile columns) so that the cohort and its activity come
-- from the same deduplicated orders.
CREATE VIEW IF NOT EXISTS {db}.cohort_retention AS
WITH
    activity AS (
        SELECT DISTINCT customer_id, toStartOfMonth(toDate(ordered_at, 'UTC')) AS month
        FROM {db}.order_events
        WHERE customer_id IN (SELECT customer_id FROM {db}.live_profiles)
    ),
    firsts AS (
        SELECT customer_id, min(month) AS cohort_month FROM activity GROUP BY customer_id
    ),
    sizes AS (
        SELECT cohort_month, count() AS cohort_size FROM firsts GROUP BY cohort_month
    )
SELECT
    f.cohort_month AS cohort_month,
    any(z.cohort_size) AS cohort_size,
    toUInt32(dateDiff('month', f.cohort_month, a.month)) AS months_since_first,
    count() AS active_customers,
    round(active_customers / cohort_size, 4) AS retention
FROM firsts AS f
INNER JOIN activity AS a ON a.customer_id = f.customer_id
INNER JOIN sizes AS z ON z.cohort_month = f.cohort_month
GROUP BY cohort_month, months_since_first
ORDER BY cohort_month, months_since_first;

-- Channel performance by first-touch channel ('unknown' when the profile has no touch).
-- customers: live profiles; buyers: those with at least one order; orders, revenue: sums;
-- conversion = buyers / customers; avg_order_value = revenue / orders;
-- revenue_per_customer = revenue / customers.
CREATE VIEW IF NOT EXISTS {db}.channel_performance AS
SELECT
    channel,
    customers,
    buyers,
    total_orders AS orders,
    total_revenue AS revenue,
    round(buyers / customers, 4) AS conversion,
    if(total_orders > 0, round(toFloat64(total_revenue) / total_orders, 2), 0) AS avg_order_value,
    round(toFloat64(total_revenue) / customers, 2) AS revenue_per_customer
FROM
(
    SELECT
        if(first_touch_channel = '', 'unknown', toString(first_touch_channel)) AS channel,
        count() AS customers,
        countIf(orders > 0) AS buyers,
        sum(orders) AS total_orders,
        sum(revenue) AS total_revenue
    FROM {db}.live_profiles
    GROUP BY channel
)
ORDER BY revenue DESC, channel;

-- Lifetime value. historical_ltv: net revenue so far.
-- predicted_ltv: the textbook "simple CLV", AOV x purchase frequency x expected lifetime,
-- added to what was already earned:
--   orders_per_year          = orders * 365 / max(tenure_days, 365)
--                              (tenure from the first order; at least a year, so a new
--                              customer's one order is not extrapolated to 12 a year)
--   expected_remaining_years = 3 while the customer is active (ordered in the last 365 days),
--                              0 once lapsed
--   predicted_ltv            = historical_ltv + avg_order_value * orders_per_year
--                              * expected_remaining_years
-- The 3-year lifetime is the one assumption to tune per business (edit it in a new migration).
CREATE VIEW IF NOT EXISTS {db}.customer_ltv AS
WITH toDate(now(), 'UTC') AS today_utc
SELECT
    customer_id,
    currency,
    today_utc AS as_of,
    orders,
    revenue AS historical_ltv,
    avg_order_value,
    if(first_order_at IS NULL, NULL,
       toInt32(greatest(dateDiff('day', toDate(assumeNotNull(first_order_at), 'UTC'), today_utc), 0)))
        AS tenure_days,
    if(last_order_at IS NULL, NULL,
       toInt32(greatest(dateDiff('day', toDate(assumeNotNull(last_order_at), 'UTC'), today_utc), 0)))
        AS recency_days,
    if(orders > 0, orders * 365 / greatest(ifNull(tenure_days, 0), 365), 0) AS orders_per_year,
    if(orders > 0 AND ifNull(recency_days, 366) <= 365, 3, 0) AS expected_remaining_years,
    round(toFloat64(avg_order_value) * orders_per_year * expected_remaining_years, 2)
        AS predicted_future_value,
    round(toFloat64(revenue) + predicted_future_value, 2) AS predicted_ltv
FROM {db}.live_profiles;
