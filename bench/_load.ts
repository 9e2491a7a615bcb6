/**
 * HTTP load generator for bench/http_health.ts (run as its own process).
 *
 *   deno run -A bench/_load.ts --url http://127.0.0.1:PORT/health
 *     [--connections 32] [--duration 3000] [--warmup 500]
 *     [--client raw|fetch] [--server-pid PID]
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

let phase: "warmup" | "measure" | "stop" = "warmup";
let ok = 0;
let failures = 0;
let firstFailure = "";

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
  const request = new TextEncoder().encode(
    `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n` +
      `Accept: */*\r\n\r\n`,
  );
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
      await conn.write(request);
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
    }
  } finally {
    conn.close();
  }
}

/** One `fetch` loop (keep-alive through fetch's connection pool). */
async function fetchLoop(): Promise<void> {
  const target = url.href;
  while (phase !== "stop") {
    const res = await fetch(target);
    await res.arrayBuffer();
    if (res.status !== 200) fail(`status ${res.status}`);
    else if (phase === "measure") ok++;
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
await new Promise((r) => setTimeout(r, durationMs));
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
