/**
 * HTTP load generator for bench/http_health.ts and bench/http_auth.ts (run
 * as its own process).
 *
 *   deno run -A bench/_load.ts --url http://127.0.0.1:PORT/health
 *     [--connections 32] [--duration 3000] [--warmup 500]
 *     [--client raw|fetch] [--server-pid PID]
 *     [--header "Name: value"]... [--requests-file FILE]
 *
 * Opens N keep-alive connections, each looping request -> full response, for
 * `warmup` ms (not counted) and then `duration` ms (counted). Every response
 * must be a 200 with a Content-Length body; anything else is counted as a
 * failure and makes the process exit 1.
 *
 * `raw` (default) speaks HTTP/1.1 over `Deno.connect` and parses responses by
 * hand, which costs far less CPU per request than `fetch`, so the generator
 * stays ahead of the server for longer. `fetch` uses N `fetch` loops.
 *
 * `--header` (repeatable) adds a header to every request. `--requests-file`
 * holds one JSON array of `[name, value]` pairs per line: extra headers for
 * ONE request each (e.g. pre-signed single-use signatures), taken in order
 * across all connections. When they run out during the counted window, the
 * window ends there (`exhausted: true`); running out during warm-up is a
 * failure.
 *
 * Prints one JSON line: requests, seconds, rps, failures and the CPU time
 * this process and `--server-pid` used during the counted window.
 *
 * @module
 */
import { cpuMs, flag, numFlag, reply, systemCpuMs } from "./_util.ts";

const url = new URL(flag("url") ?? "http://127.0.0.1:8086/health");
const connections = numFlag("connections", 32);
const durationMs = numFlag("duration", 3000);
const warmupMs = numFlag("warmup", 500);
const client = flag("client") ?? "raw";
const serverPid = numFlag("server-pid", 0);
const requestsFile = flag("requests-file");

/** Every `--header "Name: value"` given. */
function headerFlags(args = Deno.args): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < args.length; i++) {
    const v = args[i] === "--header"
      ? args[++i]
      : args[i].startsWith("--header=")
      ? args[i].slice(9)
      : undefined;
    if (v === undefined) continue;
    const colon = v.indexOf(":");
    if (colon < 1) {
      throw new Error(`--header: expected 'Name: value', got ${v}`);
    }
    out.push([v.slice(0, colon).trim(), v.slice(colon + 1).trim()]);
  }
  return out;
}
const fixedHeaders = headerFlags();
/** Per-request extra headers from --requests-file, each used once. */
const pool: [string, string][][] = requestsFile
  ? (await Deno.readTextFile(requestsFile)).split("\n").filter((l) => l)
    .map((l) => JSON.parse(l))
  : [];
let poolNext = 0;

let phase: "warmup" | "measure" | "stop" = "warmup";
let ok = 0;
let failures = 0;
let firstFailure = "";
let exhausted = false;
let endMeasure = () => {};
/** Requests sent and not yet answered (matters once the pool is used up). */
let inflight = 0;
const NONE: [string, string][] = [];

/** Extra headers for the next request: none without a pool, undefined once it is used up. */
function nextPooled(): [string, string][] | undefined {
  if (!requestsFile) return NONE;
  if (poolNext < pool.length) return pool[poolNext++];
  if (phase === "warmup") fail("requests file used up during warm-up");
  else answered();
  return undefined;
}

/** Called after each answer: the counted window ends once the pool is used up and every request answered. */
function answered(): void {
  if (
    requestsFile && poolNext === pool.length && inflight === 0 &&
    phase === "measure"
  ) {
    exhausted = true;
    endMeasure();
  }
}

function fail(why: string): void {
  failures++;
  firstFailure ||= why;
}

const CRLFCRLF = [13, 10, 13, 10];

function indexOfHeaderEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 3 < to; i++) {
    if (
      buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 &&
      buf[i + 3] === 10
    ) return i;
  }
  return -1;
}

const latin1 = new TextDecoder("latin1");

/** One keep-alive connection speaking HTTP/1.1 by hand. */
async function rawLoop(): Promise<void> {
  const conn = await Deno.connect({
    hostname: url.hostname,
    port: Number(url.port || 80),
  });
  conn.setNoDelay(true);
  const encoder = new TextEncoder();
  const requestHead =
    `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n` +
    `Accept: */*\r\n` + fixedHeaders.map(([k, v]) => `${k}: ${v}\r\n`).join("");
  const fixed = encoder.encode(requestHead + "\r\n");
  let buf = new Uint8Array(16 * 1024);
  let start = 0;
  let end = 0;
  const fill = async (): Promise<void> => {
    if (end === buf.length) {
      if (start > 0) {
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      } else {
        const bigger = new Uint8Array(buf.length * 2);
        bigger.set(buf);
        buf = bigger;
      }
    }
    const n = await conn.read(buf.subarray(end));
    if (n === null) throw new Error("server closed the connection");
    end += n;
  };
  try {
    while (phase !== "stop") {
      const extra = nextPooled();
      if (extra === undefined) break;
      inflight++;
      await conn.write(
        extra.length === 0 ? fixed : encoder.encode(
          requestHead + extra.map(([k, v]) => `${k}: ${v}\r\n`).join("") +
            "\r\n",
        ),
      );
      let headEnd: number;
      while ((headEnd = indexOfHeaderEnd(buf, start, end)) === -1) {
        await fill();
      }
      const head = latin1.decode(buf.subarray(start, headEnd)).toLowerCase();
      const status = Number(head.slice(9, 12));
      const cl = head.indexOf("\r\ncontent-length:");
      if (cl === -1) {
        throw new Error(`response without content-length: ${head}`);
      }
      const length = parseInt(head.slice(cl + 17), 10);
      const bodyStart = headEnd + CRLFCRLF.length;
      while (end - bodyStart < length) await fill();
      start = bodyStart + length;
      if (start === end) start = end = 0;
      if (status !== 200) fail(`status ${status}`);
      else if (phase === "measure") ok++;
      inflight--;
      answered();
    }
  } finally {
    conn.close();
  }
}

/** One `fetch` loop (keep-alive through fetch's connection pool). */
async function fetchLoop(): Promise<void> {
  const target = url.href;
  while (phase !== "stop") {
    const extra = nextPooled();
    if (extra === undefined) break;
    inflight++;
    const res = await fetch(target, {
      headers: [...fixedHeaders, ...extra],
    });
    await res.arrayBuffer();
    if (res.status !== 200) fail(`status ${res.status}`);
    else if (phase === "measure") ok++;
    inflight--;
    answered();
  }
}

const loop = client === "fetch" ? fetchLoop : rawLoop;
const loops = Array.from(
  { length: connections },
  () =>
    loop().catch((err) => {
      if (phase !== "stop") fail(String(err?.message ?? err));
    }),
);

await new Promise((r) => setTimeout(r, warmupMs));
const cpu0 = cpuMs("self");
const srv0 = serverPid ? cpuMs(serverPid) : NaN;
const sys0 = systemCpuMs();
const t0 = performance.now();
phase = "measure";
await new Promise<void>((r) => {
  const timer = setTimeout(r, durationMs);
  endMeasure = () => {
    clearTimeout(timer);
    r();
  };
});
const count = ok;
const seconds = (performance.now() - t0) / 1000;
const cpu1 = cpuMs("self");
const srv1 = serverPid ? cpuMs(serverPid) : NaN;
const sys1 = systemCpuMs();
phase = "stop";

reply({
  requests: count,
  seconds,
  rps: count / seconds,
  failures,
  firstFailure,
  exhausted,
  pooled: requestsFile ? poolNext : undefined,
  connections,
  client,
  // Share of one core used during the counted window.
  clientCpu: (cpu1 - cpu0) / 1000 / seconds,
  serverCpu: (srv1 - srv0) / 1000 / seconds,
  // Cores' worth of CPU everything else on the machine used meanwhile.
  otherCpu: Math.max(
    0,
    (sys1.busy - sys0.busy - (cpu1 - cpu0) - (srv1 - srv0)) / 1000 / seconds,
  ),
});
// Let in-flight requests finish (briefly), then exit.
await Promise.race([
  Promise.all(loops),
  new Promise((r) => setTimeout(r, 2000)),
]);
Deno.exit(failures > 0 ? 1 : 0);
