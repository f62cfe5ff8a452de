-- Departure delay against the weather at the origin airport in the hour of
-- the scheduled departure, one factor at a time. Flights whose hour has no
-- weather reading (about 0.5%) are left out.
with flights as (
    select
        f.is_cancelled,
        f.dep_delay_min,
        f.is_dep_delayed,
        w.precip_in,
        w.visibility_mi,
        w.wind_speed_mph
    from {{ ref('stg_flights') }} as f
    join {{ ref('stg_weather') }} as w using (origin, time_hour_utc)
),

bucketed as (
    select 'precipitation' as factor, case
            when precip_in = 0 then 1
            when precip_in < 0.1 then 2
            else 3 end as bucket_order,
        * from flights
    union all
    select 'visibility', case
            when visibility_mi < 1 then 1
            when visibility_mi < 5 then 2
            when visibility_mi < 10 then 3
            else 4 end,
        * from flights
    union all
    select 'wind', case
            when wind_speed_mph < 10 then 1
            when wind_speed_mph < 20 then 2
            when wind_speed_mph >= 20 then 3 end,
        * from flights
)

select
    factor,
    bucket_order,
    case factor
        when 'precipitation' then ['none', 'light (< 0.1 in/h)', 'heavy (>= 0.1 in/h)']
        when 'visibility' then ['< 1 mi', '1-5 mi', '5-10 mi', '10 mi (clear)']
        when 'wind' then ['< 10 mph', '10-20 mph', '>= 20 mph']
    end[bucket_order]                                       as bucket,
    count(*)                                                as flights,
    count(*) filter (where is_cancelled) / count(*)         as cancelled_rate,
    avg(dep_delay_min)                                      as avg_dep_delay_min,
    count(*) filter (where is_dep_delayed)
        / nullif(count(dep_delay_min), 0)                   as dep_delayed_rate
from bucketed
where bucket_order is not null
group by factor, bucket_order
order by factor, bucket_order
