select
    faa,
    name  as airport_name,
    lat,
    lon,
    tzone as time_zone
from {{ source('raw', 'airports') }}
