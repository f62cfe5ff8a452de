-- Hourly weather at the origin airports. One EWR reading has a wind speed of
-- 1,048 mph (2013-02-12 08:00 UTC): an instrument error, set to null here so
-- that the accepted_range test below holds.
select
    origin,
    strptime(time_hour, '%Y-%m-%dT%H:%M:%SZ')                 as time_hour_utc,
    temp                                                      as temp_f,
    humid                                                     as humidity_pct,
    case when wind_speed <= 150 then wind_speed end           as wind_speed_mph,
    wind_gust                                                 as wind_gust_mph,
    precip                                                    as precip_in,
    visib                                                     as visibility_mi,
    pressure                                                  as pressure_mb
from {{ source('raw', 'weather') }}
