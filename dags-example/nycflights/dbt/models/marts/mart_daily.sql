-- One row per day of 2013: what ../summarise.py reports for "this day".
select
    flight_date,
    count(*)                                         as flights,
    count(*) filter (where is_cancelled)             as cancelled,
    count(*) filter (where is_on_time) / count(*)    as on_time_rate,
    avg(dep_delay_min)                               as avg_dep_delay_min,
    avg(arr_delay_min)                               as avg_arr_delay_min
from {{ ref('stg_flights') }}
group by flight_date
order by flight_date
