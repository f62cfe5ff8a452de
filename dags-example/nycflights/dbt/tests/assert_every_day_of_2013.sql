-- The daily mart has exactly one row for each of the 365 days of 2013.
select count(*) as days, min(flight_date) as first_day, max(flight_date) as last_day
from {{ ref('mart_daily') }}
having count(*) <> 365
    or min(flight_date) <> date '2013-01-01'
    or max(flight_date) <> date '2013-12-31'
