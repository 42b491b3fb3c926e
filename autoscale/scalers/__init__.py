"""Event-source scalers: one module per source type.

- `base`: MetricSample, MetricType and the Scaler protocol.
- `params`: declarative trigger parameters (`param(...)`, `parse_params`).
- `registry`: trigger type -> scaler class (built-ins, `autoscale.scalers` entry points);
  `build_scaler()`, `known_types()`, `metric_name()`, `trigger_label()`.
- `connections`: SharedClients, one reference-counted client per endpoint and credentials.
- `redis_streams`: `type: redis-streams` (XPENDING, XLEN, XINFO GROUPS lag).
"""
