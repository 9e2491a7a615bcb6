/**
 * The real `main.ts` process serving HTTP: /health, request ids, the JSON
 * error shape, /metrics (checked with a real Prometheus text parser), the
 * live log stream on WS /ws and /stats.
 */
import assert from "node:assert/strict";
// @ts-types="./_prometheus.d.ts"
import parsePrometheus from "parse-prometheus-text-format";
import {
  deadline,
  type PlexusProcess,
  poll,
  startPlexus,
  writeConfig,
} from "./_process.ts";

const HELLO = ["--plugin", "./plugins/examples/hello.ts"];
const UUID_RE =
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function withNode(
  args: string[],
  fn: (p: PlexusProcess) => Promise<void>,
  dir?: string,
): Promise<void> {
  const p = await startPlexus({ args, dir });
  try {
    await fn(p);
  } finally {
    await p.close();
  }
}

async function json(res: Response): Promise<Record<string, unknown>> {
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  return await res.json();
}

Deno.test("serve: /health reports the node and its plugins; request ids; 404 shape", async () => {
  await withNode(HELLO, async (p) => {
    const res = await p.fetch("/health");
    assert.equal(res.status, 200);
    const generated = res.headers.get("x-request-id");
    assert.match(generated ?? "", UUID_RE, "a fresh X-Request-Id is a UUID");
    const body = await json(res);
    assert.equal(body.status, "healthy");
    assert.equal(typeof body.timestamp, "string");
    assert.ok(
      !Number.isNaN(Date.parse(body.timestamp as string)),
      "timestamp is a date",
    );
    const denoJson = JSON.parse(
      await Deno.readTextFile(new URL("../../deno.json", import.meta.url)),
    );
    assert.equal(body.version, denoJson.version);
    assert.equal(typeof body.nodeId, "string");
    assert.ok((body.nodeId as string).length > 0);
    const services = body.services as Record<
      string,
      { name: string; status: string; latency?: number }
    >;
    assert.ok(services.hello, "the loaded plugin is listed in services");
    assert.equal(services.hello.name, "hello");
    assert.equal(services.hello.status, "up");
    for (const [key, s] of Object.entries(services)) {
      assert.equal(s.name, key, `services.${key}.name`);
      assert.ok(["up", "down"].includes(s.status), `services.${key}.status`);
      if (s.latency !== undefined) assert.equal(typeof s.latency, "number");
    }

    // A valid incoming request id is echoed back.
    const echoed = await p.fetch("/health", {
      headers: { "X-Request-Id": "it-test.request_42" },
    });
    await echoed.body?.cancel();
    assert.equal(echoed.headers.get("x-request-id"), "it-test.request_42");
    // An invalid one is replaced by a generated id.
    const replaced = await p.fetch("/health", {
      headers: { "X-Request-Id": "not valid because spaces" },
    });
    await replaced.body?.cancel();
    assert.match(replaced.headers.get("x-request-id") ?? "", UUID_RE);

    // Unknown route: 404 with the JSON error shape and still a request id.
    const missing = await p.fetch("/no/such/route");
    assert.equal(missing.status, 404);
    assert.match(missing.headers.get("x-request-id") ?? "", UUID_RE);
    const err = await json(missing);
    const e = err.error as { code: unknown; message: unknown };
    assert.equal(typeof e.code, "string");
    assert.equal(typeof e.message, "string");
    assert.ok((e.message as string).length > 0);
    assert.deepEqual(Object.keys(err), ["error"]);

    // Plugin routes are mounted and also carry request ids.
    const greet = await p.fetch("/plugins/hello/greet/ada");
    assert.equal(greet.status, 200);
    assert.match(greet.headers.get("x-request-id") ?? "", UUID_RE);
    assert.deepEqual(await greet.json(), { message: "hello, ada" });

    // Unknown plugin → 404 JSON too.
    const noPlugin = await p.fetch("/plugins/nope/x");
    assert.equal(noPlugin.status, 404);
    assert.ok(((await json(noPlugin)).error as { code: string }).code);
  });
});

Deno.test("serve: /health is degraded when a plugin reports down", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-it-" });
  const config = await writeConfig(dir, {
    pluginConfig: { hello: { failHealth: true } },
  });
  await withNode([...HELLO, "--config", config], async (p) => {
    const res = await p.fetch("/health");
    assert.equal(res.status, 200);
    const body = await json(res);
    assert.equal(body.status, "degraded");
    const services = body.services as Record<string, { status: string }>;
    assert.equal(services.hello.status, "down");
    assert.equal(services.kv?.status, "up");
  }, dir);
});

interface PromFamily {
  name: string;
  type: string;
  metrics: {
    value?: string;
    labels?: Record<string, string>;
    buckets?: Record<string, string>;
    count?: string;
    sum?: string;
  }[];
}

interface Scrape {
  text: string;
  families: Map<string, PromFamily>;
}

async function scrape(p: PlexusProcess): Promise<Scrape> {
  const res = await p.fetch("/metrics");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
  const text = await res.text();
  // Throws on any line that is not valid exposition format.
  const families = parsePrometheus(text) as PromFamily[];
  assert.ok(families.length > 0, "the parser found metric families");
  for (const f of families) {
    assert.match(f.name, /^plexus_/, `metric ${f.name} has the plexus_ prefix`);
  }
  return { text, families: new Map(families.map((f) => [f.name, f])) };
}

/** The value of one exact raw sample line `name{labels} value`. */
function rawSample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) {
      return Number(line.slice(series.length + 1));
    }
  }
  return undefined;
}

function counterValue(
  f: PromFamily | undefined,
  match: Record<string, string>,
): number {
  let sum = 0;
  for (const m of f?.metrics ?? []) {
    if (Object.entries(match).every(([k, v]) => m.labels?.[k] === v)) {
      sum += Number(m.value);
    }
  }
  return sum;
}

Deno.test("serve: /metrics is Prometheus text a real parser accepts; counters grow; JSON form", async () => {
  await withNode(HELLO, async (p) => {
    await (await p.fetch("/plugins/hello/greet/warmup")).body?.cancel();
    const { text: beforeText, families: before } = await scrape(p);

    const requests = before.get("plexus_http_requests_total");
    assert.equal(requests?.type, "COUNTER");
    const hist = before.get("plexus_http_request_duration_seconds");
    assert.equal(hist?.type, "HISTOGRAM");
    // parse-prometheus-text-format folds the buckets of labelled histograms
    // into one sample (and drops their _sum/_count), so only the bucket set
    // is checked through it; counts are checked on the raw text below.
    assert.ok(hist.metrics.length > 0, "histogram has series");
    const buckets = hist.metrics[0].buckets ?? {};
    for (const le of ["0.005", "0.1", "1", "10", "+Inf"]) {
      assert.ok(le in buckets, `histogram has the le="${le}" bucket`);
    }
    const state = before.get("plexus_plugin_state");
    assert.equal(state?.type, "GAUGE");
    assert.equal(
      counterValue(state, { plugin: "hello", state: "running" }),
      1,
      "hello is running per plexus_plugin_state",
    );
    const rss = before.get("plexus_process_resident_memory_bytes");
    assert.equal(rss?.type, "GAUGE");
    assert.ok(Number(rss.metrics[0].value) > 1_000_000, "rss is plausible");

    const pluginRoute = { route: "/plugins/hello/greet/:name", status: "200" };
    const n0 = counterValue(requests, pluginRoute);
    assert.ok(n0 >= 1, "the warm-up request was counted");
    for (let i = 0; i < 5; i++) {
      const r = await p.fetch(`/plugins/hello/greet/m${i}`);
      assert.equal(r.status, 200);
      await r.body?.cancel();
    }
    const { text: afterText, families: after } = await scrape(p);
    assert.equal(
      counterValue(after.get("plexus_http_requests_total"), pluginRoute),
      n0 + 5,
      "the request counter grew by exactly the requests made",
    );
    assert.ok(
      counterValue(after.get("plexus_http_requests_total"), {
        route: "/metrics",
      }) >= 1,
      "the first scrape was counted",
    );
    const countSeries =
      'plexus_http_request_duration_seconds_count{method="GET",route="/plugins/hello/greet/:name"}';
    const c0 = rawSample(beforeText, countSeries);
    assert.ok(c0 !== undefined && c0 >= 1, "histogram _count series present");
    assert.equal(
      rawSample(afterText, countSeries),
      c0 + 5,
      "the histogram count grew by exactly the requests made",
    );
    const greetings = after.get("plexus_hello_greetings_total");
    assert.equal(counterValue(greetings, {}), 6, "plugin metric counted");

    const jres = await p.fetch("/metrics", {
      headers: { Accept: "application/json" },
    });
    assert.equal(jres.status, 200);
    const j = await json(jres);
    const http = j.http_metrics as Record<string, unknown>;
    assert.ok(http, "has http_metrics");
    assert.equal(typeof http.total_requests, "number");
    assert.ok((http.total_requests as number) >= 8);
    assert.equal(typeof http.requests_by_status, "object");
    const ws = j.websocket_stats as Record<string, unknown>;
    assert.ok(ws, "has websocket_stats");
    assert.equal(ws.active_connections, 0);
    assert.equal(typeof ws.buffer_size, "number");
  });
});

interface StreamMessage {
  type: string;
  payload: Record<string, unknown>;
  timestamp: string;
  messageId: string;
}

Deno.test("serve: WS /ws replays the last 100 messages, then 'connection', then live ones", async () => {
  await withNode(HELLO, async (p) => {
    // Non-upgrade GET /ws → 426 with the JSON error shape.
    const plain = await p.fetch("/ws");
    assert.equal(plain.status, 426);
    assert.ok(((await json(plain)).error as { code: string }).code);

    // 120 non-quiet requests, each logging one "http request" line.
    const N = 120;
    for (let i = 0; i < N; i++) {
      const r = await p.fetch(`/plugins/hello/greet/n${i}`);
      assert.equal(r.status, 200);
      await r.body?.cancel();
    }
    const statsBefore = await (await p.fetch("/stats")).json();
    assert.equal(statsBefore.clients, 0);
    assert.equal(statsBefore.bufferSize, 100);

    const received: StreamMessage[] = [];
    const ws = new WebSocket(p.url.replace(/^http/, "ws") + "/ws");
    let closed = false;
    const closedP = new Promise<void>((resolve) => {
      ws.onclose = () => {
        closed = true;
        resolve();
      };
    });
    ws.onmessage = (ev) => received.push(JSON.parse(ev.data as string));
    try {
      await deadline(
        new Promise<void>((resolve, reject) => {
          ws.onopen = () => resolve();
          ws.onerror = () => reject(new Error("websocket error"));
        }),
        30_000,
        "the websocket to open",
      );
      await poll(
        () => received.some((m) => m.type === "connection"),
        "the connection message",
        30_000,
      );
      const at = received.findIndex((m) => m.type === "connection");
      const replay = received.slice(0, at);
      assert.equal(replay.length, 100, "exactly the last 100 are replayed");
      const ids = new Set<string>();
      for (const m of [...replay, received[at]]) {
        assert.deepEqual(
          Object.keys(m).sort(),
          ["messageId", "payload", "timestamp", "type"],
        );
        assert.equal(typeof m.messageId, "string");
        ids.add(m.messageId);
        assert.ok(!Number.isNaN(Date.parse(m.timestamp)));
      }
      assert.equal(ids.size, 101, "message ids are unique");
      for (let i = 1; i < replay.length; i++) {
        assert.ok(
          replay[i - 1].timestamp <= replay[i].timestamp,
          "replay is oldest first",
        );
      }
      assert.equal(received[at].payload.replayed, 100);
      // The replay is the tail of what was logged: the greet requests in
      // order, possibly followed by the access log of the /ws upgrade
      // itself, which is written before the socket opens.
      const paths = replay.map((m) => m.payload.path);
      const greets = paths.filter((x) =>
        String(x).startsWith("/plugins/hello/greet/")
      );
      const others = replay.filter((m) =>
        !String(m.payload.path).startsWith("/plugins/hello/greet/")
      );
      for (const o of others) {
        assert.equal(o.payload.msg, "http request", JSON.stringify(o));
        assert.equal(o.payload.path, "/ws", JSON.stringify(o));
      }
      assert.ok(others.length <= 1, `unexpected replayed: ${others.length}`);
      assert.equal(greets.at(-1), `/plugins/hello/greet/n${N - 1}`);
      const first = N - greets.length;
      assert.deepEqual(
        greets,
        Array.from(
          { length: greets.length },
          (_, i) => `/plugins/hello/greet/n${first + i}`,
        ),
        "greet requests replayed contiguously and in order",
      );
      for (const m of replay) {
        assert.equal(m.type, "log");
        assert.equal(m.payload.msg, "http request");
      }

      // /stats counts the connected client.
      const stats = await poll(
        async () => {
          const s = await (await p.fetch("/stats")).json();
          return s.clients === 1 ? s : undefined;
        },
        "/stats to count the client",
        30_000,
      );
      assert.equal(stats.bufferSize, 100);
      assert.equal(typeof stats.uptime, "number");
      assert.deepEqual(Object.keys(stats).sort(), [
        "bufferSize",
        "clients",
        "uptime",
      ]);

      // Live messages caused after connecting arrive after 'connection'.
      const live = await p.fetch("/plugins/hello/greet/live-one");
      assert.equal(live.status, 200);
      await live.body?.cancel();
      const liveMsg = await poll(
        () =>
          received.slice(at + 1).find((m) =>
            m.payload?.path === "/plugins/hello/greet/live-one"
          ),
        "the live log message",
        30_000,
      );
      assert.equal(liveMsg.type, "log");
      assert.equal(liveMsg.payload.msg, "http request");
      assert.equal(liveMsg.payload.status, 200);
      assert.equal(typeof liveMsg.payload.correlationId, "string");
    } finally {
      if (!closed) ws.close();
      await deadline(closedP, 30_000, "the websocket to close");
    }
  });
});
