/**
 * `GET /health` requests/s: a whole Plexus node against Fastify 5 on
 * Node.js serving the same bytes (body and headers captured from the node),
 * in the same run.
 *
 *   deno run -A bench/peers/fastify.ts [--quick] [--rounds N] [--duration MS]
 *
 * `scripts/peers/fastify.sh` installs Fastify with npm (pinned version)
 * into `~/.cache/plexus/peers/` on the first run; its server is
 * bench/peers/fastify/server.mjs. Each server runs pinned to core 0, the
 * load generator (bench/_load.ts, 32 keep-alive connections) to core 1, a
 * fresh one per round, as in bench/http_health.ts. Rounds alternate;
 * medians; ratio = Plexus ÷ Fastify. Server CPU per request is reported
 * beside the rates. A third contestant, a bare `Deno.serve` returning the
 * same bytes (bench/_http_server.ts `bare`), shows the runtime's floor:
 * `details.bareDenoOverFastify` is the most any Deno server reaches here,
 * `details.plexusOverBareDeno` the node's share of it.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  canPin,
  Child,
  info,
  isQuick,
  median,
  numFlag,
  round,
  spawnDeno,
} from "../_util.ts";
import { installPeer } from "./_install.ts";

const VERSION = "5.12.8";
const quick = isQuick();
const rounds = numFlag("rounds", quick ? 3 : 7);
const durationMs = numFlag("duration", quick ? 1000 : 2000);
const warmupMs = quick ? 300 : 500;
const connections = numFlag("connections", 32);
const serverScript = fileURLToPath(
  new URL("./fastify/server.mjs", import.meta.url),
);

interface Server {
  label: "plexus" | "fastify" | "deno" | "reads";
  child: Child;
  url: string;
  pid: number;
  results: { rps: number; serverUs: number }[];
}

async function startFastify(bodyFile: string, headersFile: string) {
  const args = [serverScript, bodyFile, headersFile];
  const pin = await canPin();
  const child = new Child(
    "fastify",
    new Deno.Command(pin ? "taskset" : "node", {
      args: pin ? ["-c", "0", "node", ...args] : args,
      cwd: installDir,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn(),
  );
  const ready = await child.next<{ url: string; pid: number }>(30_000);
  return { child, ...ready };
}

async function load(server: Server, ms: number) {
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
    "raw",
    "--server-pid",
    String(server.pid),
  ], 1);
  try {
    const r = await gen.next<
      {
        rps: number;
        requests: number;
        seconds: number;
        failures: number;
        firstFailure: string;
        serverCpu: number;
      }
    >(ms + warmupMs + 30_000);
    if (r.failures > 0) {
      throw new Error(
        `${server.label}: ${r.failures} failed requests (${r.firstFailure})`,
      );
    }
    return { rps: r.rps, serverUs: r.serverCpu * r.seconds / r.requests * 1e6 };
  } finally {
    await gen.stop();
  }
}

const [installDir] = await installPeer("fastify");
const tmp = await Deno.makeTempDir({ prefix: "plexus-peer-fastify-" });
const children: Child[] = [];
let exitCode = 0;
try {
  const nodeChild = await spawnDeno("plexus", "_http_server.ts", [
    "node",
    "--data-dir",
    tmp,
  ], 0);
  children.push(nodeChild);
  const nodeReady = await nodeChild.next<{ url: string; pid: number }>(30_000);
  const plexus: Server = {
    label: "plexus",
    child: nodeChild,
    ...nodeReady,
    results: [],
  };
  const res = await fetch(plexus.url + "/health");
  const body = new Uint8Array(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`/health answered ${res.status}`);
  const headers = [...res.headers].filter(([k]) =>
    k !== "date" && k !== "content-length" && k !== "connection" &&
    k !== "keep-alive"
  );
  await Deno.writeFile(join(tmp, "health.body"), body);
  await Deno.writeTextFile(
    join(tmp, "health.headers"),
    JSON.stringify(headers),
  );
  await Deno.writeTextFile(
    join(tmp, "health.headers.noid"),
    JSON.stringify(headers.filter(([k]) => k !== "x-request-id")),
  );
  const f = await startFastify(
    join(tmp, "health.body"),
    join(tmp, "health.headers"),
  );
  children.push(f.child);
  const fastify: Server = {
    label: "fastify",
    child: f.child,
    url: f.url,
    pid: f.pid,
    results: [],
  };
  const check = await fetch(fastify.url + "/health");
  const checkBody = new Uint8Array(await check.arrayBuffer());
  if (
    checkBody.length !== body.length ||
    !checkBody.every((b, i) => b === body[i])
  ) {
    throw new Error("Fastify does not return the node's /health bytes");
  }
  /** A bare Deno.serve (bench/_http_server.ts `mode`) returning the same bytes. */
  const startBare = async (
    label: "deno" | "reads",
    mode: string,
    headersFile: string,
  ): Promise<Server> => {
    const child = await spawnDeno(`deno-${label}`, "_http_server.ts", [
      mode,
      "--body-file",
      join(tmp, "health.body"),
      "--headers-file",
      join(tmp, headersFile),
    ], 0);
    children.push(child);
    return {
      label,
      child,
      ...(await child.next<{ url: string; pid: number }>(30_000)),
      results: [],
    };
  };
  // The runtime's floor, and nearer the node's: the same plus the header
  // reads and the request id any node makes.
  const bare = await startBare("deno", "bare", "health.headers");
  const reads = await startBare("reads", "bare-headers", "health.headers.noid");
  const nodeVersion = new TextDecoder().decode(
    (await new Deno.Command("node", { args: ["--version"] }).output()).stdout,
  ).trim();
  info(
    `fastify: /health is ${body.length} bytes with ${headers.length} headers; ${rounds} rounds x ${durationMs} ms, ${connections} connections; Fastify ${VERSION} on Node ${nodeVersion}`,
  );
  const all = [plexus, fastify, bare, reads];
  for (const s of all) await load(s, quick ? 500 : 1000); // warm-up
  for (let i = 0; i < rounds; i++) {
    // Rotate the order so no contestant always runs first.
    for (const s of all.map((_, j) => all[(i + j) % all.length])) {
      const r = await load(s, durationMs);
      s.results.push(r);
      info(
        `  round ${i + 1} ${s.label.padEnd(7)} ${round(r.rps)} req/s, server ${
          round(r.serverUs, 1)
        } µs CPU per request`,
      );
    }
  }
  const rps = (s: Server) => median(s.results.map((r) => r.rps));
  const us = (s: Server) => round(median(s.results.map((r) => r.serverUs)), 1);
  console.log(JSON.stringify({
    bench: "peers/fastify",
    metric: "requests_per_s",
    unit: "1/s",
    value: round(rps(plexus)),
    baseline: {
      name: `Fastify ${VERSION} on Node.js, same bytes`,
      value: round(rps(fastify)),
    },
    ratio: round(rps(plexus) / rps(fastify), 2),
    details: {
      rounds,
      durationMs,
      connections,
      bodyBytes: body.length,
      headers: headers.length,
      plexusRates: plexus.results.map((r) => round(r.rps)),
      fastifyRates: fastify.results.map((r) => round(r.rps)),
      bareDenoRates: bare.results.map((r) => round(r.rps)),
      bareDenoWithHeaderReadsRates: reads.results.map((r) => round(r.rps)),
      serverCpuUsPerRequest: {
        plexus: us(plexus),
        fastify: us(fastify),
        bareDeno: us(bare),
        bareDenoWithHeaderReads: us(reads),
      },
      // The floor: what Deno.serve itself reaches against Fastify, and
      // the node's share of it.
      bareDenoOverFastify: round(rps(bare) / rps(fastify), 2),
      plexusOverBareDeno: round(rps(plexus) / rps(bare), 2),
      // The floor for a server that must read request headers at all.
      headerReadsOverFastify: round(rps(reads) / rps(fastify), 2),
      plexusOverHeaderReads: round(rps(plexus) / rps(reads), 2),
    },
  }));
} catch (err) {
  info(`fastify failed: ${(err as Error).stack ?? err}`);
  exitCode = 1;
} finally {
  await Promise.all(children.map((c) => c.stop()));
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
Deno.exit(exitCode);
