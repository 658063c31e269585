// Example queries offered by the console (the views and functions of docs/sql.md).
export const EXAMPLES: { title: string; sql: string }[] = [
  {
    title: "Slowest traces",
    sql: `SELECT hex_id(trace_id) AS trace_id, root_service, root_operation,
       duration_ns / 1e6 AS duration_ms, span_count, error_count
FROM traces
WHERE start_time > now() - interval '1 day'
ORDER BY duration_ns DESC
LIMIT 20`,
  },
  {
    title: "Spans per minute by service",
    sql: `SELECT date_trunc('minute', start_time) AS minute, service_name, count(*) AS spans
FROM spans
WHERE start_time > now() - interval '1 day'
GROUP BY 1, 2
ORDER BY 1`,
  },
  {
    title: "Errors by service",
    sql: `SELECT service_name, count(*) AS spans,
       sum(CASE WHEN status_code = 2 THEN 1 ELSE 0 END) AS errors
FROM spans
GROUP BY service_name
ORDER BY errors DESC`,
  },
  {
    title: "p99 latency by operation",
    sql: `SELECT service, operation, max(p99_ns) / 1e6 AS p99_ms, sum(count) AS spans
FROM latency
WHERE minute > now() - interval '1 day'
GROUP BY 1, 2
ORDER BY p99_ms DESC
LIMIT 20`,
  },
  {
    title: "Calls between services",
    sql: `SELECT parent_service, child_service, count(*) AS calls,
       avg(duration_ns) / 1e6 AS avg_ms
FROM span_edges
GROUP BY 1, 2
ORDER BY calls DESC`,
  },
  {
    title: "Metric points",
    sql: `SELECT time, metric_name, metric_type, service_name, attributes, value, count, sum
FROM metric_points
ORDER BY time DESC
LIMIT 100`,
  },
  {
    title: "One trace's spans",
    sql: `SELECT hex_id(span_id) AS span_id, hex_id(parent_span_id) AS parent, service_name,
       span_name, start_time, duration_ns / 1e6 AS duration_ms, status_code
FROM spans
WHERE trace_id = trace_id_from_hex('<trace id>')
ORDER BY start_time`,
  },
];
