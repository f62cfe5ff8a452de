-- One row per scheduled departure. Times in the source are local clock times
-- written as numbers (517 is 05:17); time_hour is the scheduled hour in UTC
-- and is what joins to the weather.
select
    make_date(year, month, day)                         as flight_date,
    month,
    carrier,
    flight                                              as flight_number,
    tailnum,
    origin,
    dest,
    sched_dep_time // 100                               as sched_dep_hour,
    strptime(time_hour, '%Y-%m-%dT%H:%M:%SZ')           as time_hour_utc,
    dep_delay                                           as dep_delay_min,
    arr_delay                                           as arr_delay_min,
    air_time                                            as air_time_min,
    distance                                            as distance_mi,
    dep_time is null                                    as is_cancelled,
    -- no arrival delay but a departure: diverted (or not recorded)
    dep_time is not null and arr_delay is null          as is_diverted,
    -- the US DOT rule: on time means arriving less than 15 minutes late
    coalesce(arr_delay < 15, false)                     as is_on_time,
    coalesce(dep_delay >= 15, false)                    as is_dep_delayed
from {{ source('raw', 'flights') }}
