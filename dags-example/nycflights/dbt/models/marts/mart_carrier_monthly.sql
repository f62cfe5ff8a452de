-- On-time performance by carrier and month. On time: arrived less than 15
-- minutes late; cancelled and diverted flights count as not on time.
select
    f.carrier,
    a.carrier_name,
    f.month,
    count(*)                                         as flights,
    count(*) filter (where f.is_cancelled)           as cancelled,
    count(*) filter (where f.is_diverted)            as diverted,
    count(*) filter (where f.is_on_time)             as on_time,
    count(*) filter (where f.is_on_time) / count(*)  as on_time_rate,
    avg(f.arr_delay_min)                             as avg_arr_delay_min,
    avg(f.dep_delay_min)                             as avg_dep_delay_min
from {{ ref('stg_flights') }} as f
join {{ ref('stg_airlines') }} as a using (carrier)
group by all
order by f.carrier, f.month
