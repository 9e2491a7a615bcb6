/**
 * Log records through OpenTelemetry on a real node: with
 * `OTEL_DENO_CONSOLE=replace` a warn line is exported with severity WARN
 * (and still written to stdout); with Deno's default `capture` it is
 * exported as INFO with its level in the body, and stays on stdout.
 */
import assert from "node:assert/strict";
import { startPlexus } from "../integration/_process.ts";
import { otelEnv, startReceiver } from "./_receiver.ts";

for (const mode of ["replace", "capture"] as const) {
  Deno.test(
    `telemetry: a warn log line with OTEL_DENO_CONSOLE=${mode} is exported as ${
      mode === "replace" ? "WARN" : "INFO"
    } and written to stdout`,
    async () => {
      await using rx = startReceiver();
      const node = await startPlexus({
        env: {
          ...otelEnv(rx.url, `plexus-logs-${mode}`),
          OTEL_DENO_CONSOLE: mode,
        },
      });
      try {
        const res = await fetch(new URL("/api/v1/tasks", node.url), {
          headers: { authorization: "Bearer not-a-token" },
        });
        assert.equal(res.status, 401);
        await res.body?.cancel();
        const line = await node.waitForLog(
          (r) => r.msg === "authentication refused",
          "the warn line on stdout",
        );
        assert.equal(line.level, "warn");
        await rx.until(
          () =>
            rx.logs.some((l) => l.body.includes('"authentication refused"')),
          "the warn record at the receiver",
        );
        const records = rx.logs.filter((l) =>
          l.body.includes('"authentication refused"')
        );
        assert.deepEqual(
          [...new Set(records.map((r) => r.severity))],
          [mode === "replace" ? "WARN" : "INFO"],
        );
        // Info lines keep INFO either way.
        await rx.until(
          () => rx.logs.some((l) => l.body.includes('"http request"')),
          "an access log record",
        );
        assert.ok(
          rx.logs.filter((l) => l.body.includes('"http request"')).every((l) =>
            l.severity === "INFO"
          ),
        );
      } finally {
        await node.close();
      }
    },
  );
}
