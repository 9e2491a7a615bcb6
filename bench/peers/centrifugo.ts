/**
 * WebSocket fan-out: Plexus's live log stream (`WS /ws?batch=1` of a real
 * node) and the agent gateway's broadcast (100 SDK agents) against
 * Centrifugo v6.9.1 in the same run, each delivering N messages of ~260
 * bytes to 100 WebSocket clients.
 *
 *   deno run -A bench/peers/centrifugo.ts [--quick] [--rounds R] [--messages N]
 *     [--gateway-messages G] [--profile DIR] [--sdk-protobuf]
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
 * Gateway broadcast (the third contestant, `details.gateway*`): a node of
 * bench/_gateway_server.ts (`node`, KV file, a non-durable channel
 * `fanout`) and 100 enrolled agents, the SDK's `connectAgent` (signature
 * handshake, sealed records), all in one clients process
 * (bench/_gateway_clients.ts, as bench/gateway.ts runs them), each
 * subscribed to `fanout`. The node broadcasts G messages (4,000; 1,000 with
 * `--quick`: at ~60 messages/s N would make a round several minutes long)
 * (`{"msg","pad"}`, the body of Centrifugo's publishes) through the
 * kernel's `gateway:agents` capability, in bursts of 16 concurrent
 * `broadcast()` calls, 4 bursts in flight: the shape of the Centrifugo
 * side's 16 publishes per `/api/batch` request, 4 requests in flight. Not
 * `POST /api/v1/agents/broadcast`: it takes one message per request, so
 * each message would pay an HTTP request, a JWT check and a JSON parse that
 * Centrifugo's batch spreads over 16; the capability call is what a plugin
 * that broadcasts does, and it is how the `/ws` contestant publishes too
 * (in-process). So the comparison leaves Centrifugo paying its HTTP API and
 * the gateway not. Each agent's copy is an inner record of a sealed batch
 * frame for its session (one ChaCha20-Poly1305 over the records the node
 * sends that agent in one microtask turn; the SDK asks for them with
 * `batch: 2`) and the SDK acks what it handled with records the node
 * opens, several ids per ack record (the node's `ready` says `acks`); the
 * main process measures those record operations alone
 * (`details.gatewayRecordFloor`): building a `msg` inner record and its
 * share of its frame's one seal (`batchUs`, frames of `recordsPerFrame`
 * records, the median the agents counted in the round:
 * `gatewayRecordsPerFrame`) plus one ack open per ack record
 * (`acksPerDelivery`, counted by the node: its records in per delivery in
 * the round) is the least a sealed broadcast costs the node, so
 * `floorRate` = 1 / (that × 100 agents) on one core, and
 * `gatewayRatioToFloor` = the measured rate ÷ it (`recordFloorRate`: the
 * floor with one seal per record, `sealUs`, as before sealed batch frames).
 * `gatewayKvReadsPerMessage`: the node's KV reads per broadcast
 * (presence and enrolment lookups), counted by the node process.
 *
 * Centrifugo to its own SDK's clients (the fourth contestant, `sdk`,
 * `details.centrifugoSdk*`): 100 clients of `centrifuge` 5.8.0 (npm, its
 * JSON protocol; `--sdk-protobuf` for its Protobuf build) in one Deno
 * process (bench/peers/_centrifuge_clients.ts), each subscribed to its own
 * channel for the run and handing every publication, parsed, to a handler
 * that checks its tag: the like-for-like of the SDK agents, where the raw
 * clients above only look for the tag in the frame text. G messages a
 * round, published as for the raw clients. `gatewayRatioToSdk` = gateway
 * broadcast ÷ this rate. Centrifugo may queue 256 MiB per client here (1
 * MiB by default, past which it drops a slow client), as the hub may.
 *
 * `--profile DIR` runs the gateway node and the agents' process under
 * `--cpu-prof` (`DIR/gateway`, `DIR/agents`); summarize a folder with
 * `deno run -A bench/_gateway_profile.ts DIR/agents`.
 *
 * @module
 */
import { join } from "node:path";
import {
  Child,
  cpuMs,
  flag,
  info,
  isQuick,
  median,
  numFlag,
  round,
  spawnDeno,
} from "../_util.ts";
import { installPeer } from "./_install.ts";
import {
  BatchWriter,
  RecordOpener,
  RecordSealer,
} from "../../sdk/protocol/record.ts";
import { FANOUT_CHANNEL } from "../_gateway_server.ts";
import { sharedRecord } from "../../gateway/connection/sender.ts";

const quick = isQuick();
const ROUNDS = numFlag("rounds", quick ? 2 : 4);
const N = numFlag("messages", quick ? 5_000 : 20_000);
const CLIENTS = numFlag("clients", 100);
/** The gateway delivers ~100 times slower: fewer messages keep its rounds near a minute. */
const GATEWAY_N = numFlag("gateway-messages", quick ? 1_000 : 4_000);
const BURST = 16;
const PROFILE_DIR = flag("profile") ?? "";
/** `--sdk-protobuf`: Centrifugo's SDK clients on its Protobuf protocol (JSON by default). */
const SDK_PROTOBUF = Deno.args.includes("--sdk-protobuf");

/** `spawnDeno` with `denoFlags`, under `--cpu-prof` into PROFILE_DIR/name when profiling. */
function spawnProfiled(
  name: string,
  script: string,
  args: string[],
  core: number,
  denoFlags: string[] = [],
): Promise<Child> {
  return spawnDeno(name, script, args, core, [
    ...denoFlags,
    ...(PROFILE_DIR
      ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}/${name}`]
      : []),
  ]);
}
const VERSION = "v6.9.1";
const API_KEY = "plexus-bench";
async function startCentrifugo(dir: string) {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const conf = join(dir, "centrifugo.json");
  await Deno.writeTextFile(
    conf,
    JSON.stringify({
      // The queue a slow client may build before Centrifugo drops it (1 MiB
      // by default): as large as the hub's (`--max-buffered` below), so the
      // SDK clients, slower than the raw ones, are not dropped mid-round.
      client: {
        insecure: true,
        allowed_origins: ["*"],
        queue_max_size: 256 << 20,
      },
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
  channel = "bench",
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
            channel,
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

type Side = "plexus" | "centrifugo" | "gateway" | "sdk";

/** The channel of the Centrifugo SDK clients (not the raw clients' `bench`). */
const SDK_CHANNEL = "bench-sdk";

/**
 * µs of this thread per record: sealing a gateway `msg` record of a
 * broadcast (header as the node writes it, `body` as payload) on its own
 * (`sealUs`, the record layer before sealed batch frames), putting it into
 * a sealed batch frame of `recordsPerFrame` records and sealing that once
 * (`batchUs`: the inner record plus its share of the frame's one AEAD, what
 * the node does now), and opening the agent's `ack` of it. Median of 5 runs
 * of `n` each.
 */
function recordCost(
  body: Uint8Array,
  n: number,
  acksPerDelivery: number,
  recordsPerFrame: number,
) {
  const agentId = `did:key:z6Mk${"a".repeat(44)}`;
  const sid = crypto.randomUUID();
  const ch = `backend.${agentId}.${FANOUT_CHANNEL}`;
  const seals: number[] = [];
  const batches: number[] = [];
  const opens: number[] = [];
  const perFrame = Math.max(1, Math.round(recordsPerFrame));
  for (let run = 0; run < 5; run++) {
    const sealer = new RecordSealer(new Uint8Array(32).fill(3));
    const ackSealer = new RecordSealer(new Uint8Array(32).fill(4));
    const opener = new RecordOpener(new Uint8Array(32).fill(4));
    const empty = new Uint8Array(0);
    const acks: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      acks.push(ackSealer.seal({
        sid,
        from: agentId,
        to: "backend",
        ch,
        type: "ack",
        id: crypto.randomUUID(),
        re: crypto.randomUUID(),
      }, empty));
    }
    const ids = Array.from({ length: n }, () => crypto.randomUUID());
    let t0 = performance.now();
    for (let i = 0; i < n; i++) {
      sealer.seal({
        sid,
        from: "node:bench",
        to: agentId,
        ch,
        type: "msg",
        id: ids[i],
        prio: 4,
        mt: "notification",
      }, body);
    }
    seals.push((performance.now() - t0) * 1000 / n);
    // As the node does for a broadcast: the part that is the same for every
    // recipient made once per message (every CLIENTS records), then each
    // recipient's `{"ch":…` (made once per connection) and that part copied
    // into its batch.
    const writer = new BatchWriter();
    let shared = sharedRecord({ type: "msg", id: "" }, body);
    const head = new TextEncoder().encode(`{"ch":${JSON.stringify(ch)}`);
    t0 = performance.now();
    for (let i = 0; i < n; i++) {
      if (i % CLIENTS === 0) {
        shared = sharedRecord(
          { type: "msg", id: ids[i], prio: 4, mt: "notification" },
          body,
        );
      }
      writer.addShared(head, shared.rest, shared.restHeader);
      if (writer.count === perFrame || i === n - 1) {
        sealer.sealBatch(writer.bytes());
        writer.clear();
      }
    }
    batches.push((performance.now() - t0) * 1000 / n);
    t0 = performance.now();
    for (let i = 0; i < n; i++) opener.open(acks[i]);
    opens.push((performance.now() - t0) * 1000 / n);
  }
  const seal = median(seals);
  const batch = median(batches);
  const open = median(opens);
  const perDelivery = batch + open * acksPerDelivery;
  return {
    recordsPerFrame: round(recordsPerFrame, 1),
    batchUs: round(batch, 2),
    sealUs: round(seal, 2),
    openAckUs: round(open, 2),
    acksPerDelivery: round(acksPerDelivery, 3),
    usPerDelivery: round(perDelivery, 2),
    floorRate: round(1e6 / (perDelivery * CLIENTS)),
    recordFloorRate: round(1e6 / ((seal + open * acksPerDelivery) * CLIENTS)),
  };
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
  const gwDir = join(tmp, "gateway");
  await Deno.mkdir(gwDir);
  const gw = await spawnProfiled("gateway", "_gateway_server.ts", [
    "node",
    "--data-dir",
    gwDir,
  ], 0);
  children.push(gw);
  const gwReady = await gw.next<{ url: string; pid: number; token: string }>(
    30_000,
  );
  const agents = await spawnProfiled("agents", "_gateway_clients.ts", [], 1);
  children.push(agents);
  await agents.send({
    cmd: "enrol",
    url: gwReady.url,
    token: gwReady.token,
    n: CLIENTS,
  });
  await agents.next(120_000);
  await agents.send({
    cmd: "connect",
    set: "agent",
    url: gwReady.url,
    n: CLIENTS,
  });
  await agents.next(120_000);
  await agents.send({ cmd: "subscribe", channel: FANOUT_CHANNEL, n: CLIENTS });
  await agents.next(60_000);
  // Centrifugo's own JavaScript SDK clients: the like-for-like of the SDK
  // agents (each hands its application a parsed message), connected for
  // the whole run as the agents are.
  // `--no-lock`: it imports `centrifuge` from npm by a computed name, kept
  // out of deno.lock (see there why).
  const sdk = await spawnProfiled(
    "sdk",
    "peers/_centrifuge_clients.ts",
    SDK_PROTOBUF ? ["--protobuf"] : [],
    1,
    ["--no-lock"],
  );
  children.push(sdk);
  await sdk.send({
    cmd: "connect",
    url: centrifugo.ws,
    n: CLIENTS,
    channel: SDK_CHANNEL,
  });
  await sdk.next(120_000);
  const runId = crypto.randomUUID().slice(0, 8);
  let seq = 0;
  // Pad Centrifugo's pushes to the size of the hub's messages (~264 B).
  const pad = "x".repeat(150);

  const gatewayRound = async (n: number) => {
    const tag = `bench-${runId}-gateway-${++seq}`;
    type Received = { frames: number; records: number };
    await agents.send({ cmd: "expect", tag, n });
    const r0 = await agents.next<Received>();
    type Stats = { kv: { reads: number }; records: { in: number } };
    await gw.send({ cmd: "stats" });
    const s0 = await gw.next<Stats>();
    const cpu0 = cpuMs(gwReady.pid);
    const clientCpu0 = cpuMs(agents.pid);
    const t0 = performance.now();
    const limit = 60_000 + n * 100;
    const done = agents.next<Received>(limit);
    await gw.send({ cmd: "broadcast", tag, n, burst: BURST, inflight: 4, pad });
    const sent = await gw.next<{ sentTo: number; failed: number }>(limit);
    const r1 = await done;
    const ms = performance.now() - t0;
    const cpu = cpuMs(gwReady.pid) - cpu0;
    const clientCpu = cpuMs(agents.pid) - clientCpu0;
    await gw.send({ cmd: "stats" });
    const s1 = await gw.next<Stats>();
    if (sent.sentTo !== n * CLIENTS || sent.failed !== 0) {
      throw new Error(
        `gateway broadcast reached ${sent.sentTo} of ${
          n * CLIENTS
        } (${sent.failed} failed)`,
      );
    }
    return {
      rate: n / (ms / 1000),
      serverUsPerDelivery: cpu * 1000 / (n * CLIENTS),
      clientUsPerDelivery: clientCpu * 1000 / (n * CLIENTS),
      kvReadsPerMessage: (s1.kv.reads - s0.kv.reads) / n,
      acksPerDelivery: (s1.records.in - s0.records.in) / (n * CLIENTS),
      recordsPerFrame: (r1.records - r0.records) /
        Math.max(1, r1.frames - r0.frames),
      avgBytes: NaN,
    };
  };

  const sdkRound = async (n: number) => {
    const tag = `bench-${runId}-sdk-${++seq}`;
    await sdk.send({ cmd: "expect", tag, n });
    await sdk.next();
    const cpu0 = cpuMs(centrifugo.pid);
    const clientCpu0 = cpuMs(sdk.pid);
    const t0 = performance.now();
    const done = sdk.next(60_000 + n * 100);
    await publishCentrifugo(centrifugo.base, tag, n, pad, SDK_CHANNEL);
    await done;
    const ms = performance.now() - t0;
    return {
      rate: n / (ms / 1000),
      serverUsPerDelivery: (cpuMs(centrifugo.pid) - cpu0) * 1000 /
        (n * CLIENTS),
      clientUsPerDelivery: (cpuMs(sdk.pid) - clientCpu0) * 1000 /
        (n * CLIENTS),
      avgBytes: NaN,
    };
  };

  const oneRound = async (side: Side, n: number) => {
    if (side === "gateway") return await gatewayRound(n);
    if (side === "sdk") return await sdkRound(n);
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
  await oneRound("gateway", 1000);
  await oneRound("sdk", 1000);
  const runs = {
    plexus: [] as Round[],
    centrifugo: [] as Round[],
    sdk: [] as (Round & { clientUsPerDelivery: number })[],
    gateway: [] as (Round & {
      clientUsPerDelivery: number;
      kvReadsPerMessage: number;
      acksPerDelivery: number;
      recordsPerFrame: number;
    })[],
  };
  const sides: Side[] = ["plexus", "centrifugo", "gateway", "sdk"];
  for (let r = 0; r < ROUNDS; r++) {
    // Each side goes first, second and third in turn.
    const order = sides.map((_, i) => sides[(i + r) % sides.length]);
    for (const side of order) {
      let more = "";
      let x: Round & { avgBytes: number };
      if (side === "gateway") {
        const g = await gatewayRound(GATEWAY_N);
        runs.gateway.push(g);
        x = g;
        more = `, agents ${round(g.clientUsPerDelivery, 2)}; ${
          round(g.kvReadsPerMessage, 1)
        } KV reads per message, ${
          round(g.acksPerDelivery, 3)
        } ack records per delivery, ${
          round(g.recordsPerFrame, 1)
        } records per frame`;
      } else if (side === "sdk") {
        const c = await sdkRound(GATEWAY_N);
        runs.sdk.push(c);
        x = c;
        more = `, SDK clients ${round(c.clientUsPerDelivery, 2)}`;
      } else {
        x = await oneRound(side, N);
        runs[side].push(x);
      }
      info(
        `  round ${r + 1} ${side.padEnd(10)} ${round(x.rate)} msg/s${
          Number.isNaN(x.avgBytes) ? "" : ` (${round(x.avgBytes)} B each)`
        }, server ${
          round(x.serverUsPerDelivery, 2)
        } µs CPU per delivery${more}`,
      );
    }
  }
  const body = new TextEncoder().encode(JSON.stringify({
    msg: `bench-${runId}-gateway-999 log line 00000042`,
    pad,
  }));
  const floor = recordCost(
    body,
    quick ? 5_000 : 20_000,
    median(runs.gateway.map((x) => x.acksPerDelivery)),
    median(runs.gateway.map((x) => x.recordsPerFrame)),
  );
  info(
    `  record layer: ${floor.batchUs} µs a record in sealed batch frames of ${floor.recordsPerFrame} (a sealed record alone: ${floor.sealUs} µs) + open ack ${floor.openAckUs} µs × ${floor.acksPerDelivery} ack records per delivery → floor ${floor.floorRate} msg/s to ${CLIENTS} agents on one core (${floor.recordFloorRate} with one seal per record)`,
  );
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
      gatewayMessages: GATEWAY_N,
      rounds: ROUNDS,
      plexusRates: runs.plexus.map((x) => round(x.rate)),
      centrifugoRates: runs.centrifugo.map((x) => round(x.rate)),
      serverCpuUsPerDelivery: {
        plexus: us(runs.plexus),
        centrifugo: us(runs.centrifugo),
        gateway: us(runs.gateway),
      },
      gatewayBroadcastRates: runs.gateway.map((x) => round(x.rate)),
      gatewayRate: round(rate(runs.gateway)),
      gatewayRatio: round(rate(runs.gateway) / rate(runs.centrifugo), 3),
      gatewayAgentCpuUsPerDelivery: round(
        median(runs.gateway.map((x) => x.clientUsPerDelivery)),
        2,
      ),
      gatewayKvReadsPerMessage: round(
        median(runs.gateway.map((x) => x.kvReadsPerMessage)),
        1,
      ),
      gatewayRecordFloor: floor,
      gatewayRatioToFloor: round(rate(runs.gateway) / floor.floorRate, 2),
      centrifugoSdkRates: runs.sdk.map((x) => round(x.rate)),
      centrifugoSdkRate: round(rate(runs.sdk)),
      centrifugoSdkServerCpuUsPerDelivery: us(runs.sdk),
      centrifugoSdkClientCpuUsPerDelivery: round(
        median(runs.sdk.map((x) => x.clientUsPerDelivery)),
        2,
      ),
      gatewayRatioToSdk: round(rate(runs.gateway) / rate(runs.sdk), 3),
      gatewayRecordsPerFrame: round(
        median(runs.gateway.map((x) => x.recordsPerFrame)),
        1,
      ),
    },
    notes:
      "Plexus publishes in-process through its logger (WS /ws?batch=1); Centrifugo through its HTTP batch API, 16 per request; the gateway broadcasts in-process through gateway:agents (16 concurrent broadcast() calls a burst, 4 bursts in flight) to 100 SDK agents (batch: 2), each agent's copies of a burst sealed once, as one sealed batch frame; Centrifugo's SDK side: 100 centrifuge-js 5.8.0 clients (JSON protocol) in one Deno process, each handler given the parsed publication",
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
