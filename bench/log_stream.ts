/**
 * Log messages/s fanned out to 100 WebSocket clients through the node's live
 * log stream (logger -> `logStream.sink` -> hub -> `WS /ws` of a real node)
 * versus a bare Deno WebSocket broadcast loop
 * (`for (const s of sockets) s.send(text)`) with messages of the same size.
 *
 *   deno run -A bench/log_stream.ts [--quick] [--rounds N] [--seconds S]
 *     [--clients 100] [--batch 16] [--client raw|api] [--hub-frames batch]
 *
 * Servers (bench/_ws_server.ts) run pinned to core 0, the 100 clients
 * (bench/_ws_clients.ts) in one process pinned to core 1. A round connects
 * the clients (for the hub, each waits out its replay and the `connection`
 * message), publishes N tagged messages in batches with a yield to the event
 * loop between batches, and stops the clock when every client has received
 * all N. Rate = N / that time. Rounds alternate the servers; the value is
 * the median. The hub's slow-consumer limit is raised to 256 MiB so nobody
 * is dropped; drops are counted and fail the run. `--hub-frames batch`
 * connects the hub's clients with `?batch=1` (a burst per frame, one message
 * per line); the bare loop still sends one frame per message.
 *
 * @module
 */
import {
  bottleneck,
  type Child,
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

const quick = isQuick();
const rounds = numFlag("rounds", quick ? 3 : 5);
const seconds = numFlag("seconds", quick ? 1 : 2);
const nClients = numFlag("clients", 100);
const batch = numFlag("batch", 16);
const clientKind = flag("client") ?? "raw";
const hubFrames = flag("hub-frames") === "batch" ? "batch" : "single";
/** The hub's slow-consumer limit (node default 1 MiB). */
const maxBuffered = numFlag("max-buffered", 256 << 20);

interface Server {
  label: "hub" | "bare";
  child: Child;
  url: string;
  pid: number;
  n: number;
  results: RoundResult[];
}

interface RoundResult {
  n: number;
  rate: number;
  ms: number;
  publishMs: number;
  avgBytes: number;
  replayed: number;
  dropped: number;
  /** Largest socket.bufferedAmount seen (bare server only). */
  peakBuffered: number;
  serverCpu: number;
  clientCpu: number;
  otherCpu: number;
}

const tmp = await Deno.makeTempDir({ prefix: "plexus-bench-logstream-" });
const children: Child[] = [];
let clients: Child;
let messageSize = 0;
let tagSeq = 0;
const runId = crypto.randomUUID().slice(0, 8);

async function startServer(
  label: "hub" | "bare",
  args: string[],
): Promise<Server> {
  const child = await spawnDeno(label, "_ws_server.ts", args, 0);
  children.push(child);
  const ready = await child.next<{ url: string; pid: number }>(30_000);
  return { label, child, url: ready.url, pid: ready.pid, n: 0, results: [] };
}

async function serverClients(s: Server): Promise<number> {
  await s.child.send({ cmd: "clients" });
  return (await s.child.next<{ clients: number }>()).clients;
}

async function waitClients(s: Server, want: number): Promise<void> {
  const deadline = performance.now() + 10_000;
  let have: number;
  while ((have = await serverClients(s)) !== want) {
    if (performance.now() > deadline) {
      throw new Error(`${s.label}: has ${have} clients, expected ${want}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function oneRound(s: Server, n: number): Promise<RoundResult> {
  await clients.send({
    cmd: "connect",
    url: s.label === "hub" && hubFrames === "batch"
      ? `${s.url}?batch=1`
      : s.url,
    n: nClients,
    hub: s.label === "hub",
  });
  const conn = await clients.next<{ connected: number; replayed: number }>();
  await waitClients(s, nClients);

  const tag = `bench-${runId}-${s.label}-${++tagSeq}`;
  await clients.send({ cmd: "expect", tag, n });
  await clients.next(); // armed
  const size = s.label === "bare" ? messageSize : 0;
  const sys0 = systemCpuMs();
  const srv0 = cpuMs(s.pid);
  const cli0 = cpuMs(clients.pid);
  const t0 = performance.now();
  await s.child.send({ cmd: "publish", tag, n, batch, size });
  let sys1 = sys0, srv1 = srv0, cli1 = cli0, t1 = t0;
  const [pub, done] = await Promise.all([
    s.child.next<
      { ms: number; dropped: number; peakBuffered: number }
    >(120_000),
    clients.next<{ avgBytes: number }>(120_000).then((d) => {
      t1 = performance.now();
      sys1 = systemCpuMs();
      srv1 = cpuMs(s.pid);
      cli1 = cpuMs(clients.pid);
      return d;
    }),
  ]);
  const secs = (t1 - t0) / 1000;
  await clients.send({ cmd: "close" });
  await clients.next();
  await waitClients(s, 0);
  if (pub.dropped > 0) {
    throw new Error(`${s.label}: ${pub.dropped} slow consumers dropped`);
  }
  return {
    n,
    rate: n / secs,
    ms: t1 - t0,
    publishMs: pub.ms,
    avgBytes: done.avgBytes,
    replayed: conn.replayed,
    dropped: pub.dropped,
    peakBuffered: pub.peakBuffered,
    serverCpu: (srv1 - srv0) / 1000 / secs,
    clientCpu: (cli1 - cli0) / 1000 / secs,
    otherCpu: Math.max(
      0,
      (sys1.busy - sys0.busy - (srv1 - srv0) - (cli1 - cli0)) / 1000 / secs,
    ),
  };
}

const pct = (x: number) => `${Math.round(x * 100)}%`;

function show(s: Server, r: RoundResult, what: string): void {
  info(
    `  ${what} ${s.label.padEnd(4)} ${
      String(Math.round(r.rate)).padStart(6)
    } msg/s (${r.n} msgs x ${nClients} clients in ${
      Math.round(r.ms)
    } ms, publish loop ${Math.round(r.publishMs)} ms, ${
      Math.round(r.avgBytes)
    } B each, replay ${Math.round(r.replayed)}/client)  server cpu ${
      pct(r.serverCpu)
    }, clients cpu ${pct(r.clientCpu)}, other ${r.otherCpu.toFixed(2)} cores`,
  );
}

let exitCode = 0;
try {
  const hub = await startServer("hub", [
    "hub",
    "--data-dir",
    tmp,
    "--max-buffered",
    String(maxBuffered),
  ]);
  const bare = await startServer("bare", ["bare"]);
  clients = await spawnDeno("clients", "_ws_clients.ts", [
    "--client",
    clientKind,
  ], 1);
  children.push(clients);
  info(
    `log_stream: ${nClients} ${clientKind} clients, ${rounds} rounds of ~${seconds} s, batches of ${batch}`,
  );

  // Warm-up: JIT, the hub's message size, and a rate estimate for sizing N.
  const calib = quick ? 1000 : 2000;
  const wHub = await oneRound(hub, calib);
  show(hub, wHub, "warm-up");
  messageSize = Math.round(wHub.avgBytes);
  const wBare = await oneRound(bare, calib);
  show(bare, wBare, "warm-up");
  for (const [s, w] of [[hub, wHub], [bare, wBare]] as const) {
    s.n = Math.max(500, Math.round(w.rate * seconds / 100) * 100);
  }

  for (let i = 0; i < rounds; i++) {
    const order = i % 2 ? [bare, hub] : [hub, bare];
    for (const s of order) {
      const r = await oneRound(s, s.n);
      s.results.push(r);
      show(s, r, `round ${i + 1}`);
    }
  }

  const summary = (s: Server) => {
    const rates = s.results.map((r) => r.rate);
    const us = (f: (r: RoundResult) => number) =>
      median(s.results.map((r) => f(r) * r.ms * 1000 / (r.n * nClients)));
    return {
      rate: median(rates),
      spread: spread(rates),
      serverCpu: median(s.results.map((r) => r.serverCpu)),
      clientCpu: median(s.results.map((r) => r.clientCpu)),
      otherCpu: median(s.results.map((r) => r.otherCpu)),
      // CPU microseconds per delivered message (one message to one client).
      serverUs: us((r) => r.serverCpu),
      clientUs: us((r) => r.clientCpu),
      avgBytes: median(s.results.map((r) => r.avgBytes)),
    };
  };
  const h = summary(hub);
  const b = summary(bare);
  const notes: string[] = [];
  const bound = (label: string, x: ReturnType<typeof summary>) => {
    const kind = bottleneck(x.serverUs, x.clientUs);
    const serverCeiling = 1e6 / x.serverUs / nClients;
    const clientCeiling = 1e6 / x.clientUs / nClients;
    const line = `${label}: ${Math.round(x.rate)} msg/s to ${nClients} (${
      Math.round(x.rate * nClients)
    } deliveries/s, ${Math.round(x.avgBytes)} B); server ${
      pct(x.serverCpu)
    } of core 0 at ${x.serverUs.toFixed(2)} us/delivery (ceiling ~${
      Math.round(serverCeiling)
    } msg/s), clients ${pct(x.clientCpu)} of core 1 at ${
      x.clientUs.toFixed(2)
    } us/delivery (ceiling ~${Math.round(clientCeiling)} msg/s): ${kind}-bound`;
    info(line);
    if (kind !== "server") {
      notes.push(
        `${label} is ${
          kind === "client" ? "client-bound" : "at the limit of both sides"
        }: clients ~${Math.round(clientCeiling)} msg/s vs server ~${
          Math.round(serverCeiling)
        } msg/s at 100% of a core, so ${
          Math.round(x.rate)
        } may understate the server`,
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
  const hubBound = bound("hub", h);
  const bareBound = bound("bare broadcast", b);
  info(`log_stream: hub is ${hubBound}-bound, bare is ${bareBound}-bound`);
  const peak = Math.max(0, ...bare.results.map((r) => r.peakBuffered));
  info(
    `log_stream: bare server's peak socket.bufferedAmount ${peak} B: ${
      peak < 64 * 1024
        ? "sends never queued, so the clients kept up with the server"
        : "sends queued up, so the clients (or the network) fell behind"
    }`,
  );
  if (peak >= 64 * 1024) {
    notes.push(
      `bare sends queued up to ${peak} B per socket: the clients fell behind`,
    );
  }
  const cpuRatio = b.serverUs / h.serverUs;
  info(
    `log_stream: per-delivery server CPU ratio (bare/hub) ${
      cpuRatio.toFixed(2)
    }; spread hub ±${pct(h.spread)}, bare ±${pct(b.spread)}`,
  );
  if (h.spread > 0.15 || b.spread > 0.15) {
    notes.push(
      `unstable: round-to-round spread hub ±${pct(h.spread)}, bare ±${
        pct(b.spread)
      }; the per-delivery CPU ratio (serverCpuRatio) is steadier`,
    );
  }
  const dropped = [...hub.results, ...bare.results].reduce(
    (a, r) => a + r.dropped,
    0,
  );
  console.log(JSON.stringify({
    bench: "log_stream",
    metric: "messages_per_s",
    unit: "1/s",
    value: Math.round(h.rate),
    baseline: {
      name:
        `bare Deno WebSocket broadcast loop, same message size, ${nClients} clients`,
      value: Math.round(b.rate),
    },
    ratio: round(h.rate / b.rate, 2),
    details: {
      clients: nClients,
      clientKind,
      rounds,
      batch,
      hubFrames,
      messageBytes: {
        hub: Math.round(h.avgBytes),
        bare: Math.round(b.avgBytes),
      },
      messagesPerRound: { hub: hub.n, bare: bare.n },
      hubRates: hub.results.map((r) => Math.round(r.rate)),
      bareRates: bare.results.map((r) => Math.round(r.rate)),
      // hub/bare within each round (the two ran back to back).
      roundRatios: hub.results.map((r, i) =>
        round(r.rate / bare.results[i].rate, 2)
      ),
      serverCpuUsPerDelivery: {
        hub: round(h.serverUs, 2),
        bare: round(b.serverUs, 2),
      },
      serverCpuRatio: round(cpuRatio, 2),
      dropped,
      maxBufferedBytes: maxBuffered,
      barePeakBufferedBytes: peak,
      bound: { hub: hubBound, bare: bareBound },
    },
    notes,
  }));
} catch (err) {
  info(`log_stream failed: ${(err as Error).stack ?? err}`);
  exitCode = 1;
} finally {
  await Promise.all(children.map((c) => c.stop()));
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
Deno.exit(exitCode);
