/**
 * WebSocket fan-out: Plexus's live log stream (`WS /ws?batch=1` of a real
 * node) against Centrifugo v6.9.1 in the same run, both delivering N
 * messages of ~260 bytes to the same 100 WebSocket clients.
 *
 *   deno run -A bench/peers/centrifugo.ts [--quick] [--rounds R] [--messages N]
 *
 * Needs `go` on PATH the first time: `scripts/peers/centrifugo.sh` builds
 * Centrifugo with `go install` into `~/.cache/plexus/peers/` (modules
 * through the Go module proxy).
 *
 * Plexus: the node of bench/_ws_server.ts (`hub`) publishes through its
 * logger in bursts of 16 (a yield to the event loop between bursts); the
 * clients ask for batched frames (`?batch=1`). Centrifugo: memory broker,
 * insecure client mode, the clients (same process, same raw RFC 6455 code,
 * bench/_ws_clients.ts) connect and subscribe to one channel with its JSON
 * protocol; this process publishes through its HTTP API, 16 publishes per
 * `/api/batch` request, 4 requests in flight. Centrifugo writes each
 * client's queued pushes into one frame, one per line. A round ends when
 * every client has all N; rate = N / that time. Rounds alternate; medians;
 * ratio = Plexus ÷ Centrifugo. Server CPU per delivered message is reported
 * beside the rates.
 *
 * @module
 */
import { join } from "node:path";
import {
  type Child,
  cpuMs,
  info,
  isQuick,
  median,
  numFlag,
  round,
  spawnDeno,
} from "../_util.ts";
import { installPeer } from "./_install.ts";

const quick = isQuick();
const ROUNDS = numFlag("rounds", quick ? 2 : 4);
const N = numFlag("messages", quick ? 5_000 : 20_000);
const CLIENTS = numFlag("clients", 100);
const BURST = 16;
const VERSION = "v6.9.1";
const API_KEY = "plexus-bench";
async function startCentrifugo(dir: string) {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const conf = join(dir, "centrifugo.json");
  await Deno.writeTextFile(
    conf,
    JSON.stringify({
      client: { insecure: true, allowed_origins: ["*"] },
      http_server: { address: "127.0.0.1", port },
      http_api: { key: API_KEY },
      log: { level: "error" },
      health: { enabled: true },
    }),
  );
  const child = new Deno.Command(binary, {
    args: ["-c", conf],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0;; i++) {
    try {
      const res = await fetch(`${base}/health`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch {
      // not up yet
    }
    if (i > 200) throw new Error("Centrifugo did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    base,
    ws: `ws://127.0.0.1:${port}/connection/websocket`,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** Publishes n tagged messages to Centrifugo's channel, 16 per batch request, 4 requests in flight. */
async function publishCentrifugo(
  base: string,
  tag: string,
  n: number,
  pad: string,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const from = next;
      next = Math.min(n, next + BURST);
      const commands = [];
      for (let i = from; i < next; i++) {
        commands.push({
          publish: {
            channel: "bench",
            data: { msg: `${tag} log line ${String(i).padStart(8, "0")}`, pad },
          },
        });
      }
      const res = await fetch(`${base}/api/batch`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": API_KEY },
        body: JSON.stringify({ commands }),
      });
      if (!res.ok) {
        throw new Error(
          `Centrifugo /api/batch: ${res.status} ${await res.text()}`,
        );
      }
      await res.body?.cancel();
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
}

interface Round {
  rate: number;
  serverUsPerDelivery: number;
}

const [binary] = await installPeer("centrifugo");
const tmp = await Deno.makeTempDir({ prefix: "plexus-peer-centrifugo-" });
const children: Child[] = [];
const centrifugo = await startCentrifugo(tmp);
let exitCode = 0;
try {
  const hub = await spawnDeno("hub", "_ws_server.ts", [
    "hub",
    "--data-dir",
    tmp,
    "--max-buffered",
    String(256 << 20),
  ], 0);
  children.push(hub);
  const hubReady = await hub.next<{ url: string; pid: number }>(30_000);
  const clients = await spawnDeno("clients", "_ws_clients.ts", [], 1);
  children.push(clients);
  const runId = crypto.randomUUID().slice(0, 8);
  let seq = 0;
  // Pad Centrifugo's pushes to the size of the hub's messages (~264 B).
  const pad = "x".repeat(150);

  const oneRound = async (side: "plexus" | "centrifugo", n: number) => {
    await clients.send(
      side === "plexus"
        ? {
          cmd: "connect",
          url: `${hubReady.url}?batch=1`,
          n: CLIENTS,
          hub: true,
        }
        : {
          cmd: "connect",
          url: centrifugo.ws,
          n: CLIENTS,
          hub: true,
          hello:
            '{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"bench"}}',
          marker: '{"id":2',
        },
    );
    await clients.next(60_000);
    const tag = `bench-${runId}-${side}-${++seq}`;
    await clients.send({ cmd: "expect", tag, n });
    await clients.next();
    const pid = side === "plexus" ? hubReady.pid : centrifugo.pid;
    const cpu0 = cpuMs(pid);
    const t0 = performance.now();
    const done = clients.next<{ avgBytes: number }>(180_000);
    if (side === "plexus") {
      await hub.send({ cmd: "publish", tag, n, batch: BURST, size: 0 });
      await hub.next(180_000);
    } else {
      await publishCentrifugo(centrifugo.base, tag, n, pad);
    }
    const d = await done;
    const ms = performance.now() - t0;
    const cpu = cpuMs(pid) - cpu0;
    await clients.send({ cmd: "close" });
    await clients.next();
    return {
      rate: n / (ms / 1000),
      serverUsPerDelivery: cpu * 1000 / (n * CLIENTS),
      avgBytes: d.avgBytes,
    };
  };

  info(
    `centrifugo: ${N} messages to ${CLIENTS} clients, ${ROUNDS} round(s), Centrifugo ${VERSION}`,
  );
  await oneRound("plexus", 1000); // warm-up
  await oneRound("centrifugo", 1000);
  const runs = { plexus: [] as Round[], centrifugo: [] as Round[] };
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2
      ? ["centrifugo", "plexus"] as const
      : ["plexus", "centrifugo"] as const;
    for (const side of order) {
      const x = await oneRound(side, N);
      runs[side].push(x);
      info(
        `  round ${r + 1} ${side.padEnd(10)} ${round(x.rate)} msg/s (${
          round(x.avgBytes)
        } B each), server ${
          round(x.serverUsPerDelivery, 2)
        } µs CPU per delivery`,
      );
    }
  }
  const rate = (xs: Round[]) => median(xs.map((x) => x.rate));
  const us = (xs: Round[]) =>
    round(median(xs.map((x) => x.serverUsPerDelivery)), 2);
  console.log(JSON.stringify({
    bench: "peers/centrifugo",
    metric: "messages_per_s",
    unit: "1/s",
    value: round(rate(runs.plexus)),
    baseline: {
      name:
        `Centrifugo ${VERSION}, memory broker, ${CLIENTS} WebSocket clients`,
      value: round(rate(runs.centrifugo)),
    },
    ratio: round(rate(runs.plexus) / rate(runs.centrifugo), 2),
    details: {
      clients: CLIENTS,
      messages: N,
      rounds: ROUNDS,
      plexusRates: runs.plexus.map((x) => round(x.rate)),
      centrifugoRates: runs.centrifugo.map((x) => round(x.rate)),
      serverCpuUsPerDelivery: {
        plexus: us(runs.plexus),
        centrifugo: us(runs.centrifugo),
      },
    },
    notes:
      "Plexus publishes in-process through its logger (WS /ws?batch=1); Centrifugo through its HTTP batch API, 16 per request",
  }));
} catch (err) {
  info(`centrifugo failed: ${(err as Error).stack ?? err}`);
  exitCode = 1;
} finally {
  await Promise.all(children.map((c) => c.stop()));
  await centrifugo.stop();
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
Deno.exit(exitCode);
