/**
 * OpenTelemetry on one real node: an HTTP request carrying a `traceparent`
 * continues that trace in a server span named by its route, the trace id is
 * its correlation id, and its log lines reach the OTLP receiver and stdout
 * with the span's ids.
 */
import assert from "node:assert/strict";
import { startPlexus } from "../integration/_process.ts";
import { assertContinues, otelEnv, startReceiver } from "./_receiver.ts";

Deno.test("telemetry: an incoming traceparent continues the trace through a route span, the correlation id and the log records; plugins' setup and stop are spans", async () => {
  await using rx = startReceiver();
  const node = await startPlexus({ env: otelEnv(rx.url, "plexus-http") });
  try {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const parent = "00f067aa0ba902b7";
    const res = await node.api("/api/v1/tasks", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        traceparent: `00-${traceId}-${parent}-01`,
      },
      body: JSON.stringify({ type: "echo", payload: { hi: 1 } }),
    });
    assert.equal(res.status, 202, await res.text());
    assert.equal(res.headers.get("x-request-id"), traceId);

    await rx.until(
      () => rx.spans.some((s) => s.name === "POST /api/v1/tasks"),
      "the route span of POST /api/v1/tasks",
    );
    const server = rx.spans.find((s) => s.name === "POST /api/v1/tasks")!;
    assert.equal(server.service, "plexus-http");
    assert.equal(server.traceId, traceId);
    await assertContinues(rx, server, parent);
    assert.equal(server.attributes["http.route"], "/api/v1/tasks");
    assert.equal(server.attributes["http.response.status_code"], 202);

    // The access log line, exported as an OTel log record of that span.
    await rx.until(
      () =>
        rx.logs.some((l) =>
          l.spanId === server.spanId && l.body.includes('"http request"')
        ),
      "the access log record of the route span",
    );
    const line = await node.waitForLog(
      (r) => r.msg === "http request" && r.route === "/api/v1/tasks",
      "the access log line on stdout",
    );
    assert.equal(line.trace_id, traceId);
    assert.equal(line.span_id, server.spanId);
    assert.equal(line.correlationId, traceId);

    // GET /health twice: the app answers the first, the cached path the
    // second; both are traced alike.
    const healthTrace = "1f2e3d4c5b6a79881f2e3d4c5b6a7988";
    for (let i = 0; i < 2; i++) {
      const h = await node.fetch("/health", {
        headers: { traceparent: `00-${healthTrace}-0123456789abcdef-01` },
      });
      await h.body?.cancel();
      assert.equal(h.headers.get("x-request-id"), healthTrace);
    }
    const healthSpans = () =>
      rx.spans.filter((s) =>
        s.traceId === healthTrace && s.name === "GET /health" &&
        s.attributes["http.route"] === "/health"
      );
    await rx.until(() => healthSpans().length === 2, "two GET /health spans");

    // Plugin setup and (on SIGTERM) stop spans, exported before the exit.
    const setups = rx.spans.filter((s) => s.name === "plugin.setup");
    assert.ok(setups.length > 0, "no plugin.setup span");
    node.signal("SIGTERM");
    assert.equal((await node.exit()).code, 0);
    const plugin = setups[0].attributes["plexus.plugin"];
    await rx.until(
      () =>
        rx.spans.some((s) =>
          s.name === "plugin.stop" && s.attributes["plexus.plugin"] === plugin
        ),
      `the plugin.stop span of ${plugin}`,
    );
  } finally {
    await node.close();
  }
});

Deno.test("telemetry: with OTel off an incoming traceparent still becomes the correlation id", async () => {
  const node = await startPlexus();
  try {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const res = await node.fetch("/health", {
      headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` },
    });
    await res.body?.cancel();
    assert.equal(res.headers.get("x-request-id"), traceId);
    const own = await node.fetch("/health", {
      headers: {
        traceparent: `00-${traceId}-b7ad6b7169203331-01`,
        "x-request-id": "mine-1",
      },
    });
    await own.body?.cancel();
    assert.equal(own.headers.get("x-request-id"), "mine-1");
  } finally {
    await node.close();
  }
});
