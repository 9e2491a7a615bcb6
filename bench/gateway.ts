/**
 * Sealed round trips/s through the agent gateway of a real node versus a
 * bare Deno WebSocket echo, and handshakes/s.
 *
 *   deno run -A bench/gateway.ts [--quick] [--rounds N] [--seconds S]
 *     [--agents 100] [--profile DIR] [--only 256B_100_agents,handshakes]
 *     [--handshakes full,resume,ws] [--sides node,bare]
 *
 * A sealed round trip: an agent (the SDK, `agent.request`) sends a `req`
 * record on `agent.{id}.requests`, the node opens it, checks session,
 * channel and role, and hands it to a backend handler registered through
 * the kernel's `gateway:agents` capability (`onRequest`), which returns the
 * payload; the node seals the `res` and the agent opens it. The node is
 * `startNode` with a KV file, rate limits off, log level warn
 * (bench/_gateway_server.ts). Agents are enrolled with
 * `POST /api/v1/agents` (one keygen each) and connect with full signature
 * handshakes before the rounds.
 *
 * The baseline, in the same run: a bare `Deno.serve` +
 * `Deno.upgradeWebSocket` server echoing every frame, with plain
 * `WebSocket` clients sending the same payload bytes (the JSON body the
 * agent's record carries) as binary frames and waiting for the echo.
 *
 * The floor, in the same run: that bare echo plus the record layer and
 * nothing else (bench/_gateway_server.ts `floor`): each client seals its
 * payload's JSON as a `req` record with an agent's header, the server opens
 * it, parses the body, encodes the reply and seals a `res`, the client
 * opens it and parses it (fixed keys, no handshake). What any sealed echo
 * must do per round trip; `ratio_to_floor` is the node against it.
 *
 * Both servers run pinned to core 0, all clients in one process pinned to
 * core 1 (bench/_gateway_clients.ts). Every connection runs a closed loop
 * with one request outstanding; a case is a payload size (256 B, 16 KiB) and
 * a number of connections (1, 100); the 100 connections of each side stay
 * open for the whole run (in the 1-connection cases the other 99 idle).
 * Rounds alternate node and bare; values are medians of the rounds, CPU
 * per operation is pooled over them, and the node's KV calls per operation
 * are counted. Both sides' clients use the SDK's WebSocket client
 * (sdk/ws_client.ts): Deno's `new WebSocket` stalls ~44 ms
 * on every frame over 1 KiB (bench/_gateway_nagle.ts). Handshakes/s: 8 loops, each on its own enrolled agent, of connect →
 * ready → close: full signature handshakes (SDK `connectAgent` + `close`),
 * resumed ones (token), and plain WebSocket open + close on the bare server.
 *
 * `--profile DIR` runs every process under `--cpu-prof` (`DIR/node`,
 * `DIR/bare`, `DIR/floor`, `DIR/clients`; figures then are not comparable)
 * and prints each one's hottest frames with their µs per round trip
 * (bench/_gateway_profile.ts); `--only`, `--handshakes` and `--sides node`
 * (no bare rounds, so the clients' profile is the agents' alone) narrow a
 * run (and a profile) to some parts.
 *
 * @module
 */
import {
  bottleneck,
  canPin,
  Child,
  cpuMs,
  flag,
  info,
  isQuick,
  median,
  numFlag,
  round,
  spawnDeno,
  spread,
  systemCpuMs,
} from "./_util.ts";
import { summarizeProfile } from "./_gateway_profile.ts";

const quick = isQuick();
const rounds = numFlag("rounds", quick ? 3 : 5);
const seconds = numFlag("seconds", quick ? 0.3 : 0.6);
const nAgents = numFlag("agents", 100);
const hsConc = numFlag("handshake-loops", 8);
const hsRounds = numFlag("handshake-rounds", 3);
const hsKinds = (flag("handshakes") ?? "full,resume,ws").split(",");
const hsSeconds = numFlag("handshake-seconds", quick ? 0.4 : 0.8);
const profileDir = flag("profile");
/** Runs only these parts (case names like `256B_100_agents`, or `handshakes`). */
const only = flag("only")?.split(",");
const wanted = (name: string) => !only || only.includes(name);
const sides = (flag("sides") ?? "node,bare,floor").split(",");
const SIZES = [256, 16 * 1024];
const CONNS = [1, nAgents];
const HEADLINE = { size: 256, conns: nAgents };

/** The node, the bare echo, and the bare echo plus the record layer (`floor`). */
type Side = "node" | "bare" | "floor";

interface Server {
  label: Side;
  child: Child;
  url: string;
  pid: number;
  token?: string;
}

interface Round {
  rps: number;
  p50: number;
  p99: number;
  /** Server and client CPU per round trip, µs. */
  serverUs: number;
  clientUs: number;
  /** Cores busy with anything but server and clients, on average. */
  otherCores: number;
  /** The node's KV commits and reads per operation (NaN for the bare server). */
  kvCommits: number;
  kvReads: number;
  n: number;
  serverMs: number;
  clientMs: number;
}

interface Case {
  size: number;
  conns: number;
  node: Round[];
  bare: Round[];
  floor: Round[];
}

const tmp = await Deno.makeTempDir({ prefix: "plexus-bench-gateway-" });
const children: Child[] = [];

async function startServer(
  label: Side,
  args: string[],
  denoFlags: string[] = [],
): Promise<Server> {
  const child = await spawnDeno(
    label,
    "_gateway_server.ts",
    [label, ...args],
    0,
    denoFlags,
  );
  children.push(child);
  const ready = await child.next<{ url: string; pid: number; token?: string }>(
    30_000,
  );
  return { label, child, url: ready.url, pid: ready.pid, token: ready.token };
}

type Timed = { n: number; ms: number; p50: number; p99: number };

/** KV calls the node made so far (NaN for the bare server). */
async function kvCalls(
  server: Server,
): Promise<{ commits: number; reads: number }> {
  if (server.label !== "node") return { commits: NaN, reads: NaN };
  await server.child.send({ cmd: "stats" });
  return (await server.child.next<{
    kv: { commits: number; reads: number };
  }>()).kv;
}

/** CPU µs per operation; NaN when the CPU clock (10 ms ticks) saw too little to tell. */
const perOp = (cpu: number, n: number) => cpu >= 100 ? cpu * 1000 / n : NaN;

/**
 * Runs one client command: its rate and latencies, the CPU both sides
 * spent per operation, and the cores anything else kept busy meanwhile
 * (other processes, or a hypervisor's steal: the machine is shared).
 */
async function timed(
  clients: Child,
  server: Server,
  cmd: Record<string, unknown>,
): Promise<Round & { r: Timed }> {
  const kv0 = await kvCalls(server);
  const sys0 = systemCpuMs();
  const s0 = cpuMs(server.pid);
  const c0 = cpuMs(clients.pid);
  const t0 = performance.now();
  await clients.send(cmd);
  const r = await clients.next<Timed>(120_000);
  const wall = performance.now() - t0;
  const serverMs = cpuMs(server.pid) - s0;
  const clientMs = cpuMs(clients.pid) - c0;
  const sys1 = systemCpuMs();
  const kv1 = await kvCalls(server);
  return {
    kvCommits: (kv1.commits - kv0.commits) / r.n,
    kvReads: (kv1.reads - kv0.reads) / r.n,
    r,
    n: r.n,
    serverMs,
    clientMs,
    rps: r.n / (r.ms / 1000),
    p50: r.p50,
    p99: r.p99,
    serverUs: perOp(serverMs, r.n),
    clientUs: perOp(clientMs, r.n),
    otherCores: Math.max(0, sys1.busy - sys0.busy - serverMs - clientMs) /
      wall,
  };
}

function oneRound(
  clients: Child,
  s: Server,
  size: number,
  conns: number,
  ms: number,
): Promise<Round> {
  return timed(clients, s, {
    cmd: "run",
    set: s.label === "node" ? "agent" : s.label === "bare" ? "ws" : "floor",
    conns,
    size,
    ms,
  });
}

const caseName = (size: number, conns: number) =>
  `${size >= 1024 ? `${size / 1024}KiB` : `${size}B`}_${conns}_agent${
    conns === 1 ? "" : "s"
  }`;

/** CPU µs per operation over all rounds; null when the CPU clock saw too little. */
function pooledUs(rs: Round[], side: "serverMs" | "clientMs"): number | null {
  const us = perOp(
    rs.reduce((a, r) => a + r[side], 0),
    rs.reduce((a, r) => a + r.n, 0),
  );
  return Number.isFinite(us) ? us : null;
}

function summarize(rs: Round[]) {
  const rps = rs.map((r) => r.rps);
  const serverUs = pooledUs(rs, "serverMs");
  const clientUs = pooledUs(rs, "clientMs");
  return {
    rps: round(median(rps)),
    p50_ms: round(median(rs.map((r) => r.p50)), 3),
    p99_ms: round(median(rs.map((r) => r.p99)), 3),
    server_cpu_us_per_rt: serverUs === null ? null : round(serverUs, 1),
    client_cpu_us_per_rt: clientUs === null ? null : round(clientUs, 1),
    bound: serverUs === null || clientUs === null
      ? "latency"
      : bottleneck(serverUs, clientUs),
    spread: round(spread(rps), 2),
    other_cores: round(median(rs.map((r) => r.otherCores)), 2),
    ...(Number.isFinite(rs[0].kvCommits)
      ? {
        kv_commits_per_op: round(median(rs.map((r) => r.kvCommits)), 3),
        kv_reads_per_op: round(median(rs.map((r) => r.kvReads)), 3),
      }
      : {}),
  };
}

let exitCode = 0;
try {
  const t0 = performance.now();
  const profFlags = (side: string) =>
    profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}/${side}`] : [];
  const node = await startServer(
    "node",
    ["--data-dir", tmp],
    profFlags("node"),
  );
  const bare = await startServer("bare", [], profFlags("bare"));
  const floor = await startServer("floor", [], profFlags("floor"));
  const clients = await spawnDeno(
    "clients",
    "_gateway_clients.ts",
    [],
    1,
    profFlags("clients"),
  );
  children.push(clients);
  info(
    `gateway: ${nAgents} agents, ${rounds} rounds x ${seconds} s per case, pinned ${
      await canPin() ? "server core 0, clients core 1" : "no (taskset missing)"
    }${profileDir ? ", node under --cpu-prof" : ""}`,
  );

  await clients.send({
    cmd: "enrol",
    url: node.url,
    token: node.token,
    n: nAgents + hsConc,
  });
  const enrolled = await clients.next<{ enrolled: number; ms: number }>();
  info(
    `  enrolled ${enrolled.enrolled} agents via POST /api/v1/agents in ${
      Math.round(enrolled.ms)
    } ms`,
  );
  const connect = await timed(clients, node, {
    cmd: "connect",
    set: "agent",
    url: node.url,
    n: nAgents,
  });
  await clients.send({ cmd: "connect", set: "ws", url: bare.url, n: nAgents });
  await clients.next();
  await clients.send({
    cmd: "connect",
    set: "floor",
    url: floor.url,
    n: nAgents,
  });
  await clients.next();
  for (const s of [node, bare, floor]) {
    await s.child.send({ cmd: "stats" });
    const st = await s.child.next<{ connections: number }>();
    if (st.connections !== nAgents) {
      throw new Error(
        `${s.label}: ${st.connections} connections, expected ${nAgents}`,
      );
    }
  }
  info(
    `  connected ${nAgents} agents in ${
      Math.round(connect.r.ms)
    } ms (node CPU ${connect.serverMs} ms), ${nAgents} plain clients and ${nAgents} floor clients`,
  );

  // Warm-up: JIT on both sides, every size and connection count.
  for (const size of SIZES) {
    if (!CONNS.some((conns) => wanted(caseName(size, conns)))) continue;
    for (
      const s of [node, bare, floor].filter((s) => sides.includes(s.label))
    ) {
      await oneRound(clients, s, size, nAgents, quick ? 200 : 400);
      await oneRound(clients, s, size, 1, 100);
    }
  }

  const cases: Case[] = [];
  for (const size of SIZES) {
    for (const conns of CONNS) {
      if (!wanted(caseName(size, conns))) continue;
      const c: Case = { size, conns, node: [], bare: [], floor: [] };
      cases.push(c);
      for (let i = 0; i < rounds; i++) {
        // Each side goes first, second and third in turn.
        const all = [node, bare, floor];
        const order = [...all.slice(i % 3), ...all.slice(0, i % 3)];
        for (const s of order.filter((s) => sides.includes(s.label))) {
          const r = await oneRound(clients, s, size, conns, seconds * 1000);
          c[s.label].push(r);
          info(
            `  ${caseName(size, conns).padEnd(17)} ${s.label} ${
              String(Math.round(r.rps)).padStart(6)
            } rt/s  p50 ${r.p50.toFixed(3)} ms  p99 ${
              r.p99.toFixed(3)
            } ms  server ${r.serverUs.toFixed(1)} µs/rt  clients ${
              r.clientUs.toFixed(1)
            } µs/rt  other ${r.otherCores.toFixed(2)} cores`,
          );
        }
      }
    }
  }

  // Handshakes: agents nAgents.. are enrolled and not connected.
  const hs: Record<string, Round[]> = { full: [], resume: [], ws: [] };
  for (let i = 0; i < (wanted("handshakes") ? hsRounds : 0); i++) {
    for (
      const kind of ["full", "resume", "ws"].filter((k) => hsKinds.includes(k))
    ) {
      const s = kind === "ws" ? bare : node;
      const round_ = await timed(clients, s, {
        cmd: "handshakes",
        kind,
        url: s.url,
        first: nAgents,
        conc: hsConc,
        ms: hsSeconds * 1000,
      });
      const r = round_.r;
      hs[kind].push(round_);
      info(
        `  handshakes ${kind.padEnd(6)} ${
          String(Math.round(round_.rps)).padStart(6)
        } /s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  server ${
          round_.serverUs.toFixed(0)
        } µs  clients ${round_.clientUs.toFixed(0)} µs  other ${
          round_.otherCores.toFixed(2)
        } cores  kv ${round_.kvCommits.toFixed(2)} commits ${
          round_.kvReads.toFixed(2)
        } reads each`,
      );
    }
  }

  const details: Record<string, unknown> = {};
  for (const c of cases) {
    const n = summarize(c.node);
    // `--sides node` (profiling) runs no bare rounds.
    const b = c.bare.length ? summarize(c.bare) : null;
    const f = c.floor.length ? summarize(c.floor) : null;
    details[caseName(c.size, c.conns)] = {
      node: n,
      bare: b,
      ratio: b ? round(n.rps / b.rps, 2) : null,
      server_cpu_ratio: b?.server_cpu_us_per_rt && n.server_cpu_us_per_rt
        ? round(b.server_cpu_us_per_rt / n.server_cpu_us_per_rt, 2)
        : null,
      client_cpu_ratio: b?.client_cpu_us_per_rt && n.client_cpu_us_per_rt
        ? round(b.client_cpu_us_per_rt / n.client_cpu_us_per_rt, 2)
        : null,
      // The bare echo plus the record layer: what a sealed echo must do.
      floor: f,
      ratio_to_floor: f ? round(n.rps / f.rps, 2) : null,
      floor_ratio: f && b ? round(f.rps / b.rps, 2) : null,
      server_cpu_ratio_to_floor: f?.server_cpu_us_per_rt &&
          n.server_cpu_us_per_rt
        ? round(f.server_cpu_us_per_rt / n.server_cpu_us_per_rt, 2)
        : null,
      client_cpu_ratio_to_floor: f?.client_cpu_us_per_rt &&
          n.client_cpu_us_per_rt
        ? round(f.client_cpu_us_per_rt / n.client_cpu_us_per_rt, 2)
        : null,
      // Deno's `new WebSocket` (SDK and plain clients alike) leaves Nagle on
      // and stalls ~44 ms (delayed ACK) on payloads over 1 KiB
      // (bench/_gateway_nagle.ts): then latency sets the rate, not a server.
      ...(b && b.p50_ms >= 30 ? { client_send_stall: true } : {}),
    };
  }
  const hsSummary = (rs: Round[]) => {
    const x = summarize(rs);
    return {
      per_s: x.rps,
      p50_ms: round(x.p50_ms, 2),
      p99_ms: round(x.p99_ms, 2),
      server_cpu_us: x.server_cpu_us_per_rt && round(x.server_cpu_us_per_rt),
      client_cpu_us: x.client_cpu_us_per_rt && round(x.client_cpu_us_per_rt),
      bound: x.bound,
      ...(x.kv_commits_per_op !== undefined
        ? {
          kv_commits: round(x.kv_commits_per_op, 2),
          kv_reads: round(x.kv_reads_per_op!, 2),
        }
        : {}),
    };
  };
  if (hs.full.length && hs.resume.length && hs.ws.length) {
    details.handshakes = {
      loops: hsConc,
      full_signature: hsSummary(hs.full),
      resumed: hsSummary(hs.resume),
      bare_ws_open_close: hsSummary(hs.ws),
    };
  }
  details.setup = {
    agents: nAgents,
    enrolled: enrolled.enrolled,
    enrol_ms: Math.round(enrolled.ms),
    connect_100_ms: Math.round(connect.r.ms),
    rounds,
    seconds,
    total_s: round((performance.now() - t0) / 1000, 1),
  };

  // Clients first: agents of a node that stops under them would reconnect.
  for (const c of children.reverse()) await c.stop();
  children.length = 0;
  if (profileDir) {
    // µs per round trip: a frame's share of the CPU per round trip the
    // headline case's node rounds measured (setup and warm-up are in the
    // profile too, so these are approximate).
    const c = cases.find((c) =>
      c.size === HEADLINE.size && c.conns === HEADLINE.conns
    ) ?? cases[0];
    for (const side of ["node", "bare", "floor", "clients"] as const) {
      if (side !== "clients" && !sides.includes(side)) {
        continue;
      }
      const us = c
        ? pooledUs(
          c[side === "clients" ? "node" : side],
          side === "clients" ? "clientMs" : "serverMs",
        )
        : null;
      const top = await summarizeProfile(
        `${profileDir}/${side}`,
        25,
        us ?? undefined,
      );
      info(
        `${side} CPU profile (${profileDir}/${side}${
          us ? `, ${round(us, 1)} µs per round trip` : ""
        }), top frames by self time:`,
      );
      for (const line of top) {
        info(`  ${line}`);
      }
    }
  }

  const headCase = cases.find((c) =>
    c.size === HEADLINE.size && c.conns === HEADLINE.conns
  ) ?? cases[0];
  if (!headCase) {
    // A diagnostic run (`--only handshakes`): handshakes are the figure.
    const full = hs.full.length ? summarize(hs.full).rps : null;
    const ws = hs.ws.length ? summarize(hs.ws).rps : null;
    console.log(JSON.stringify({
      bench: "gateway",
      metric: "full_handshakes_per_s",
      unit: "1/s",
      value: full,
      baseline: { name: "bare WebSocket open + close", value: ws },
      ratio: full && ws ? round(full / ws, 3) : null,
      details,
    }));
  } else {
    const head = details[caseName(headCase.size, headCase.conns)] as {
      node: { rps: number };
      bare: { rps: number } | null;
      ratio: number | null;
    };

    console.log(JSON.stringify({
      bench: "gateway",
      metric: `sealed_round_trips_per_s_${
        caseName(headCase.size, headCase.conns)
      }`,
      unit: "1/s",
      value: head.node.rps,
      baseline: {
        name:
          `bare Deno.serve WebSocket echo, ${headCase.conns} plain client(s), same ${headCase.size} B payload`,
        value: head.bare?.rps ?? null,
      },
      ratio: head.ratio,
      details,
      notes:
        "req->res through a real node (startNode, KV file, rate limits off, " +
        "log level warn), backend handler via gateway:agents onRequest echoing " +
        "the payload; one request outstanding per connection; servers on core 0, " +
        "all clients in one process on core 1; medians of alternating rounds. " +
        "Handshakes: 8 concurrent loops of connect -> ready -> close.",
    }));
  }
} catch (err) {
  info(`gateway bench failed: ${(err as Error).stack ?? err}`);
  exitCode = 1;
} finally {
  for (const c of children.reverse()) await c.stop();
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
Deno.exit(exitCode);
