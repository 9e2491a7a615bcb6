/**
 * Plexus's durable work queue (`core/state/queue.ts` on a Deno KV file)
 * against NATS JetStream (nats-server v2.15.3, a work-queue stream on file
 * storage) doing the same work in the same run: N messages of 1 KiB
 * produced with 100 in flight and consumed, acked one by one, by pull
 * consumers, end to end (first publish to last ack).
 *
 *   deno run -A bench/peers/jetstream.ts [--quick] [--messages N] [--rounds R]
 *
 * Needs `go` on PATH the first time: `scripts/peers/nats-server.sh` builds
 * nats-server v2.15.3 with `go install` into `~/.cache/plexus/peers/`
 * (modules through the Go module proxy). Two servers run on loopback with their own temporary
 * stores: JetStream's default (`sync_interval` 2 min: a publish is acked
 * once written to the OS, fsync'd later) and `sync_interval: always` (fsync
 * before the ack, as every Deno KV commit is).
 *
 * Plexus: `enqueue()` calls, 100 at a time (concurrent calls share a commit:
 * the queue's group commit, each resolving once durable), two consumers
 * `claim(50)` and `ackAll`. A second Plexus row runs the same with the
 * opt-in loss window (`commit: { windowMs }`, `--window-ms`, default 20):
 * enqueues and acks resolve before their commit, and a SIGKILL loses at
 * most those of the last window (docs/state.md "Commit modes"); it ends
 * with `close()`, so its last acks are durable inside the timing. That
 * mode stores the messages packed, many per KV value (docs/state.md
 * "Segments"); the sync row keeps a record per message.
 * JetStream: `js.publish` 100 at a time (each resolving on the server's
 * PubAck), one durable pull consumer (`consume()`, 256 buffered) acking
 * each message. Rounds alternate Plexus sync / Plexus window / JetStream
 * default / JetStream always; medians. Headline ratio: Plexus sync ÷
 * JetStream default; `details.ratio_equal_durability`: Plexus sync ÷
 * JetStream always; `details.ratio_window_vs_default`: Plexus window ÷
 * JetStream default.
 *
 * @module
 */
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import {
  AckPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { DurableQueue, type QueueCommitMode } from "../../core/state/queue.ts";
import { openStore } from "../../core/state/store.ts";
import { cpuMs, info, isQuick, median, numFlag, round } from "../_util.ts";
import { installPeer } from "./_install.ts";

const quick = isQuick();
const N = numFlag("messages", quick ? 5_000 : 20_000);
const ROUNDS = numFlag("rounds", quick ? 1 : 3);
const WINDOW = 100;
/** The window of the opt-in group commit row. */
const WINDOW_MS = numFlag("window-ms", 20);
const VERSION = "v2.15.3";
const payload = new TextEncoder().encode(
  JSON.stringify({ x: "y".repeat(1000) }),
);

interface Server {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

async function startServer(name: string, syncAlways: boolean): Promise<Server> {
  const dir = await Deno.makeTempDir({ prefix: `plexus-peer-js-${name}-` });
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const conf = join(dir, "nats.conf");
  await Deno.writeTextFile(
    conf,
    `listen: "127.0.0.1:${port}"\njetstream {\n  store_dir: "${
      join(dir, "store")
    }"\n${syncAlways ? "  sync_interval: always\n" : ""}}\n`,
  );
  const child = new Deno.Command(natsServer, {
    args: ["-c", conf],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const url = `nats://127.0.0.1:${port}`;
  for (let i = 0;; i++) {
    try {
      const nc = await connect({ servers: url, reconnect: false });
      await jetstreamManager(nc);
      await nc.close();
      break;
    } catch (err) {
      if (i > 100) {
        throw new Error(`nats-server (${name}) did not start: ${err}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await child.stderr.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

interface Run {
  perS: number;
  /** CPU µs per message: this process plus the server's (JetStream). */
  cpuUs: number;
}

async function plexusRun(commit: QueueCommitMode = "sync"): Promise<Run> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-peer-queue-" });
  const kv = await openStore(join(dir, "q.kv"));
  const q = new DurableQueue<Uint8Array>(kv, "work", { commit });
  let acked = 0;
  const c0 = cpuMs("self");
  const t0 = performance.now();
  const producer = (async () => {
    for (let i = 0; i < N; i += WINDOW) {
      await Promise.all(
        Array.from(
          { length: Math.min(WINDOW, N - i) },
          () => q.enqueue(payload),
        ),
      );
    }
  })();
  const consumer = async () => {
    while (acked < N) {
      const ds = await q.claim(50, 30_000, "bench");
      if (ds.length === 0) {
        await q.waitForWork(2);
        continue;
      }
      const errs = await q.ackAll(ds);
      acked += errs.filter((e) => e === undefined).length;
    }
  };
  await Promise.all([producer, consumer(), consumer()]);
  // The last acks durable too (a no-op in sync mode).
  await q.close();
  const ms = performance.now() - t0;
  const cpu = cpuMs("self") - c0;
  kv.close();
  await Deno.remove(dir, { recursive: true });
  return { perS: N / (ms / 1000), cpuUs: cpu / N * 1000 };
}

async function jetStreamRun(server: Server, r: number): Promise<Run> {
  const nc = await connect({ servers: server.url });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const stream = `WORK${r}`;
  await jsm.streams.add({
    name: stream,
    subjects: [`${stream}.>`],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
  });
  await jsm.consumers.add(stream, {
    durable_name: "c",
    ack_policy: AckPolicy.Explicit,
    max_ack_pending: 10_000,
  });
  const consumer = await js.consumers.get(stream, "c");
  const c0 = cpuMs("self") + cpuMs(server.pid);
  const t0 = performance.now();
  const msgs = await consumer.consume({ max_messages: 256 });
  const consumed = (async () => {
    let got = 0;
    for await (const m of msgs) {
      m.ack();
      if (++got >= N) break;
    }
  })();
  for (let i = 0; i < N; i += WINDOW) {
    await Promise.all(
      Array.from(
        { length: Math.min(WINDOW, N - i) },
        () => js.publish(`${stream}.a`, payload),
      ),
    );
  }
  await consumed;
  const ms = performance.now() - t0;
  const cpu = cpuMs("self") + cpuMs(server.pid) - c0;
  msgs.stop();
  await jsm.streams.delete(stream);
  await nc.close();
  return { perS: N / (ms / 1000), cpuUs: cpu / N * 1000 };
}

const [natsServer] = await installPeer("nats-server");
const relaxed = await startServer("default", false);
const always = await startServer("always", true);
const runs = {
  plexus: [] as Run[],
  plexusWindow: [] as Run[],
  jsDefault: [] as Run[],
  jsAlways: [] as Run[],
};
info(
  `jetstream: ${N} messages of 1 KiB, ${ROUNDS} round(s), nats-server ${VERSION}`,
);
try {
  for (let r = 0; r < ROUNDS; r++) {
    runs.plexus.push(await plexusRun());
    runs.plexusWindow.push(await plexusRun({ windowMs: WINDOW_MS }));
    runs.jsDefault.push(await jetStreamRun(relaxed, r));
    runs.jsAlways.push(await jetStreamRun(always, r));
    info(
      `  round ${r + 1}: Plexus ${round(runs.plexus[r].perS)} msg/s (sync), ${
        round(runs.plexusWindow[r].perS)
      } (window ${WINDOW_MS} ms), JetStream ${
        round(runs.jsDefault[r].perS)
      } (default sync), ${round(runs.jsAlways[r].perS)} (sync always)`,
    );
  }
} finally {
  await relaxed.stop();
  await always.stop();
}
const m = (rs: Run[]) => median(rs.map((x) => x.perS));
const cpu = (rs: Run[]) => round(median(rs.map((x) => x.cpuUs)), 1);
console.log(JSON.stringify({
  bench: "peers/jetstream",
  metric: "messages_per_s",
  unit: "1/s",
  value: round(m(runs.plexus)),
  baseline: {
    name: `NATS JetStream ${VERSION}, work-queue stream on file, default sync`,
    value: round(m(runs.jsDefault)),
  },
  ratio: round(m(runs.plexus) / m(runs.jsDefault), 2),
  details: {
    messages: N,
    rounds: ROUNDS,
    jetstream_sync_always: round(m(runs.jsAlways)),
    ratio_equal_durability: round(m(runs.plexus) / m(runs.jsAlways), 2),
    plexus_window: round(m(runs.plexusWindow)),
    window_ms: WINDOW_MS,
    ratio_window_vs_default: round(
      m(runs.plexusWindow) / m(runs.jsDefault),
      2,
    ),
    cpu_us_per_message: {
      plexus: cpu(runs.plexus),
      plexus_window: cpu(runs.plexusWindow),
      jetstream_default: cpu(runs.jsDefault),
      jetstream_always: cpu(runs.jsAlways),
    },
  },
  notes:
    "Plexus acks each enqueue after its KV commit (fsync'd); JetStream default acks a publish before fsync (sync every 2 min)",
}));
Deno.exit(0);
