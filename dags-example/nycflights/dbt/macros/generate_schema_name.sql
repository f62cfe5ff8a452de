{#- Use `+schema` as given (staging, marts) instead of dbt's default
    `<target schema>_<custom schema>` (main_staging, main_marts). -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name | trim if custom_schema_name else target.schema }}
{%- endmacro %}
