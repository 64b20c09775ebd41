"""The query language and the sufficient statistics: query specifications, filters,
data models, vector layouts and one module per statistic kind (``stats/kinds``). No I/O
but reading a data model's file."""
