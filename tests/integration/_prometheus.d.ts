/** Minimal types for the untyped npm package `parse-prometheus-text-format`. */
declare function parsePrometheusTextFormat(text: string): unknown[];
export default parsePrometheusTextFormat;
