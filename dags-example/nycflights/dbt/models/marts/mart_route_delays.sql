-- Arrival delay by route (origin and destination), worst first.
select
    f.origin,
    f.dest,
    coalesce(ap.airport_name, f.dest)                      as dest_name,
    count(*)                                               as flights,
    count(*) filter (where f.is_cancelled)                 as cancelled,
    avg(f.arr_delay_min)                                   as avg_arr_delay_min,
    -- nullif: DuckDB gives NaN for 0/0, and EWR-LGA has one flight, cancelled
    count(*) filter (where f.arr_delay_min >= 15)
        / nullif(count(f.arr_delay_min), 0)                as arr_delayed_rate,
    count(*) >= {{ var('regular_route_min_flights') }}     as is_regular,
    rank() over (
        order by avg(f.arr_delay_min) desc nulls last
    )                                                      as delay_rank
from {{ ref('stg_flights') }} as f
left join {{ ref('stg_airports') }} as ap on ap.faa = f.dest
group by all
order by delay_rank
