/**
 * Requests/s of `GET /health` through a whole node (Hono app, request ids,
 * correlation, metrics, access-log level check, health cache) versus a bare
 * `Deno.serve` handler returning the same bytes with the same content type.
 *
 *   deno run -A bench/http_health.ts [--quick] [--rounds N] [--duration MS]
 *     [--connections N] [--client raw|fetch]
 *
 * Each server runs in its own process pinned to core 0; the load generator
 * (bench/_load.ts) runs in a fresh process pinned to core 1 for every round.
 * Rounds alternate the two servers; the value is the median. The last line
 * on stdout is the JSON result; everything else goes to stderr.
 *
 * @module
 */
import {
  bottleneck,
  type Child,
  flag,
  info,
  isQuick,
  median,
  numFlag,
  round,
  spawnDeno,
  spread,
} from "./_util.ts";

interface LoadResult {
  requests: number;
  seconds: number;
  rps: number;
  failures: number;
  firstFailure: string;
  clientCpu: number;
  serverCpu: number;
  otherCpu: number;
}

interface Server {
  label: string;
  child: Child;
  url: string;
  pid: number;
  results: LoadResult[];
}

const quick = isQuick();
const rounds = numFlag("rounds", quick ? 3 : 7);
const durationMs = numFlag("duration", quick ? 1000 : 2000);
const warmupMs = quick ? 300 : 500;
const connections = numFlag("connections", 32);
const client = flag("client") ?? "raw";

const tmp = await Deno.makeTempDir({ prefix: "plexus-bench-health-" });
const children: Child[] = [];

async function startServer(label: string, args: string[]): Promise<Server> {
  const child = await spawnDeno(label, "_http_server.ts", args, 0);
  children.push(child);
  const ready = await child.next<{ url: string; pid: number }>(30_000);
  return { label, child, url: ready.url, pid: ready.pid, results: [] };
}

async function load(server: Server, ms: number): Promise<LoadResult> {
  const gen = await spawnDeno("load", "_load.ts", [
    "--url",
    server.url + "/health",
    "--connections",
    String(connections),
    "--duration",
    String(ms),
    "--warmup",
    String(warmupMs),
    "--client",
    client,
    "--server-pid",
    String(server.pid),
  ], 1);
  let result: LoadResult;
  try {
    result = await gen.next<LoadResult>(ms + warmupMs + 30_000);
  } finally {
    await gen.stop();
  }
  if (result.failures > 0) {
    throw new Error(
      `${server.label}: ${result.failures} failed requests (first: ${result.firstFailure})`,
    );
  }
  return result;
}

const pct = (x: number) => `${Math.round(x * 100)}%`;

let exitCode = 0;
try {
  const full = await startServer("node", [
    "node",
    "--data-dir",
    tmp,
  ]);
  // Capture the real /health body once; the bare server replays its bytes.
  const res = await fetch(full.url + "/health");
  const body = new Uint8Array(await res.arrayBuffer());
  const contentType = res.headers.get("content-type") ?? "";
  if (res.status !== 200) {
    throw new Error(`/health answered ${res.status}: ${body.length} bytes`);
  }
  await Deno.writeFile(`${tmp}/health.body`, body);
  // The same response, headers included (security headers, request id):
  // only Date and Content-Length are the server's own.
  const headers = [...res.headers].filter(([k]) =>
    k !== "date" && k !== "content-length"
  );
  await Deno.writeTextFile(`${tmp}/health.headers`, JSON.stringify(headers));
  const bare = await startServer("bare", [
    "bare",
    "--body-file",
    `${tmp}/health.body`,
    "--headers-file",
    `${tmp}/health.headers`,
  ]);
  const check = await fetch(bare.url + "/health");
  const checkBody = new Uint8Array(await check.arrayBuffer());
  const names = (h: Headers) =>
    [...h.keys()].filter((k) => k !== "date" && k !== "content-length").join();
  if (
    names(check.headers) !== names(res.headers) ||
    check.headers.get("content-type") !== contentType ||
    checkBody.length !== body.length || !checkBody.every((b, i) =>
      b === body[i]
    )
  ) {
    throw new Error("bare server does not return the captured bytes");
  }
  info(
    `http_health: /health is ${body.length} bytes of ${contentType} with ${headers.length} headers; ` +
      `${rounds} rounds x ${durationMs} ms, ${connections} ${client} connections`,
  );

  // Warm-up: JIT both servers (not counted).
  for (const s of [full, bare]) await load(s, quick ? 500 : 1000);

  for (let i = 0; i < rounds; i++) {
    const order = i % 2 ? [bare, full] : [full, bare];
    for (const s of order) {
      const r = await load(s, durationMs);
      s.results.push(r);
      info(
        `  round ${i + 1} ${s.label.padEnd(4)} ${
          String(Math.round(r.rps)).padStart(6)
        } req/s  server cpu ${pct(r.serverCpu)}, load-gen cpu ${
          pct(r.clientCpu)
        }, other processes ${r.otherCpu.toFixed(2)} cores`,
      );
    }
  }

  const summary = (s: Server) => {
    const rps = s.results.map((r) => r.rps);
    const serverCpu = median(s.results.map((r) => r.serverCpu));
    const clientCpu = median(s.results.map((r) => r.clientCpu));
    // CPU microseconds spent per request by each side.
    const serverUs = median(
      s.results.map((r) => r.serverCpu * r.seconds / r.requests * 1e6),
    );
    const clientUs = median(
      s.results.map((r) => r.clientCpu * r.seconds / r.requests * 1e6),
    );
    return {
      rps: median(rps),
      spread: spread(rps),
      serverCpu,
      clientCpu,
      otherCpu: median(s.results.map((r) => r.otherCpu)),
      serverUs,
      clientUs,
      // What one core of server / load generator could do at 100 %.
      serverCeiling: 1e6 / serverUs,
      clientCeiling: 1e6 / clientUs,
    };
  };
  const f = summary(full);
  const b = summary(bare);
  const notes: string[] = [];
  const bound = (label: string, x: ReturnType<typeof summary>) => {
    const kind = bottleneck(x.serverUs, x.clientUs);
    const line = `${label}: ${Math.round(x.rps)} req/s; server ${
      pct(x.serverCpu)
    } of core 0 at ${x.serverUs.toFixed(1)} us/req (ceiling ~${
      Math.round(x.serverCeiling)
    } req/s), load generator ${pct(x.clientCpu)} of core 1 at ${
      x.clientUs.toFixed(1)
    } us/req (ceiling ~${Math.round(x.clientCeiling)} req/s): ${kind}-bound`;
    info(line);
    if (kind === "client") {
      notes.push(
        `${label} is client-bound: the load generator's ceiling (~${
          Math.round(x.clientCeiling)
        } req/s) is below the server's (~${Math.round(x.serverCeiling)}), so ${
          Math.round(x.rps)
        } understates the server`,
      );
    } else if (kind === "balanced") {
      notes.push(
        `${label} is at the limit of both sides (load generator ~${
          Math.round(x.clientCeiling)
        } req/s, server ~${
          Math.round(x.serverCeiling)
        } req/s at 100% of a core): ${
          Math.round(x.rps)
        } may understate the server somewhat`,
      );
    }
    if (x.otherCpu > 0.25) {
      notes.push(
        `other processes used ~${
          x.otherCpu.toFixed(2)
        } cores during the ${label} rounds; absolute rates are depressed (alternating rounds keep the ratio fairer)`,
      );
    }
    return kind;
  };
  const fullBound = bound("full node", f);
  const bareBound = bound("bare Deno.serve", b);
  info(
    `http_health: full stack is ${fullBound}-bound, bare is ${bareBound}-bound`,
  );
  const cpuRatio = b.serverUs / f.serverUs;
  info(
    `http_health: per-request server CPU ratio (bare/full) ${
      cpuRatio.toFixed(2)
    }; rps spread full ±${pct(f.spread)}, bare ±${pct(b.spread)}`,
  );
  if (f.spread > 0.15 || b.spread > 0.15) {
    notes.push(
      `unstable: round-to-round spread full ±${pct(f.spread)}, bare ±${
        pct(b.spread)
      }; the per-request CPU ratio (serverCpuRatio) is steadier`,
    );
  }
  const ratio = f.rps / b.rps;
  console.log(JSON.stringify({
    bench: "http_health",
    metric: "requests_per_s",
    unit: "1/s",
    value: Math.round(f.rps),
    baseline: {
      name: "bare Deno.serve returning the same bytes (body and headers)",
      value: Math.round(b.rps),
    },
    ratio: round(ratio, 2),
    details: {
      rounds,
      durationMs,
      connections,
      client,
      bodyBytes: body.length,
      fullRps: full.results.map((r) => Math.round(r.rps)),
      bareRps: bare.results.map((r) => Math.round(r.rps)),
      // full/bare within each round (the two ran back to back).
      roundRatios: full.results.map((r, i) =>
        round(r.rps / bare.results[i].rps, 2)
      ),
      serverCpuUsPerReq: {
        full: round(f.serverUs, 1),
        bare: round(b.serverUs, 1),
      },
      serverCpuRatio: round(cpuRatio, 2),
      serverCeilingRps: {
        full: Math.round(f.serverCeiling),
        bare: Math.round(b.serverCeiling),
      },
      loadGenCeilingRps: Math.round(b.clientCeiling),
      bound: { full: fullBound, bare: bareBound },
    },
    notes,
  }));
} catch (err) {
  info(`http_health failed: ${(err as Error).stack ?? err}`);
  exitCode = 1;
} finally {
  await Promise.all(children.map((c) => c.stop()));
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
Deno.exit(exitCode);
