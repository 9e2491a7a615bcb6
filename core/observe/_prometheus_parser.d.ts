// Types for npm:parse-prometheus-text-format, which ships none.
export interface PrometheusSample {
  labels?: Record<string, string>;
  value?: string;
  buckets?: Record<string, string>;
  quantiles?: Record<string, string>;
  count?: string;
  sum?: string;
}
export interface PrometheusFamily {
  name: string;
  help: string;
  type: "COUNTER" | "GAUGE" | "HISTOGRAM" | "SUMMARY" | "UNTYPED";
  metrics: PrometheusSample[];
}
export default function parsePrometheusTextFormat(
  text: string,
): PrometheusFamily[];
