/**
 * What sealing and opening cost the main thread, without a broker: node `a`
 * seals N 1 KiB envelopes through {@linkcode sealedTransport} over an inner
 * transport that only keeps them (windows of 100, as bench/sealed_payloads.ts
 * publishes), then node `b`'s sealed subscription is handed each one after a
 * JSON round trip, as a broker would. Prints, per round and as medians, the
 * main thread's CPU per message for each side (`/proc/self/task/PID/stat`, so
 * other processes' load moves it less than wall time) and the process's
 * (all threads: with the sealed worker, what it moved off the main thread
 * shows there). `--worker` seals and opens on the transports' workers. A helper for
 * profiling (`deno run -A --cpu-prof bench/_sealed_cost.ts`); not in
 * `deno task bench`.
 *
 *   deno run -A bench/_sealed_cost.ts [--messages N] [--rounds R] [--alloc] [--worker]
 *
 * With `--alloc`, after the warm-up, one more round of each side runs under
 * V8's sampling heap profiler (objects collected since counted too) and
 * prints what each side allocates per message: JavaScript heap by
 * allocating function, biggest first, and ArrayBuffer backing stores
 * (`external` grown between windows: off the heap, so not sampled).
 *
 * @module
 */
import {
  sealedTransport,
  type SealingKeys,
  type SealingPolicy,
} from "../core/security/sealed_transport.ts";
import {
  freshSealingKeys,
  kvSealingDirectory,
} from "../core/security/sealing_keys.ts";
import { createEnvelope, type Envelope } from "../core/envelope.ts";
import type {
  Delivery,
  DeliveryHandler,
  Transport,
} from "../core/transport.ts";
import { Session } from "node:inspector";
import process from "node:process";
import { cpuMs, median, numFlag, round } from "./_util.ts";

const N = numFlag("messages", 20_000);
const ROUNDS = numFlag("rounds", 7);
const WARMUP = 2;
const WINDOW = 100;
const topic = "sealed.cost";
const ALLOC = Deno.args.includes("--alloc");
const WORKER = Deno.args.includes("--worker");

const kv = await Deno.openKv(":memory:");
const directory = kvSealingDirectory(kv, { cacheMs: 3_600_000 });
async function keysOf(id: string): Promise<SealingKeys> {
  return await freshSealingKeys(id, directory);
}

/** Keeps what is published; `deliver` hands an envelope to the subscriber. */
function keeper() {
  const kept: Envelope[] = [];
  let handler: DeliveryHandler | undefined;
  const done = () => Promise.resolve();
  const transport = {
    name: "keeper",
    caps: { maxMessageBytes: 1 << 20 },
    publish(_topic: string, envelope: Envelope) {
      kept.push(envelope);
      return Promise.resolve();
    },
    subscribe(_topic: string, h: DeliveryHandler) {
      handler = h;
      return Promise.resolve({ close: done });
    },
    close: done,
  } as unknown as Transport;
  const deliver = (envelope: Envelope) =>
    handler!({
      envelope,
      topic: envelope.topic,
      attempts: 1,
      ack: done,
      nak: done,
      inProgress: done,
      term: (reason: string) => {
        throw new Error(`refused: ${reason}`);
      },
      settled: false,
    } as Delivery);
  return { transport, kept, deliver };
}

function mainThreadCpuMs(): number {
  const stat = Deno.readTextFileSync(`/proc/self/task/${Deno.pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** CPU ms of this process's Worker threads (named `worker-N`), and all threads. */
function threadCpuMs(): { workers: number; all: number } {
  let workers = 0, all = 0;
  for (const task of Deno.readDirSync("/proc/self/task")) {
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/self/task/${task.name}/stat`);
    } catch {
      continue; // a thread that ended
    }
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ms = (Number(fields[11]) + Number(fields[12])) * 10;
    all += ms;
    if (name.startsWith("worker-")) workers += ms;
  }
  return { workers, all };
}

const policy: SealingPolicy = {
  topics: [{ pattern: "sealed.>", recipients: ["node:b"] }],
};
const pub = keeper();
const sub = keeper();
const sealer = sealedTransport(pub.transport, policy, await keysOf("node:a"), {
  worker: WORKER,
});
const opener = sealedTransport(sub.transport, policy, await keysOf("node:b"), {
  worker: WORKER,
});
let opened = 0;
await opener.subscribe(topic, () => {
  opened++;
  return Promise.resolve();
}, { group: "g" });

/** Runs `step` over `items` in windows; external bytes grown per window. */
async function windows<T>(
  items: T[],
  step: (item: T) => Promise<void>,
): Promise<number> {
  let grown = 0;
  let last = process.memoryUsage().external;
  for (let i = 0; i < items.length; i += WINDOW) {
    await Promise.all(items.slice(i, i + WINDOW).map(step));
    const now = process.memoryUsage().external;
    if (now > last) grown += now - last;
    last = now;
  }
  return grown;
}

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

/** V8's sampling heap profiler around `run`: bytes by allocating function. */
async function sampled(run: () => Promise<number>) {
  const session = new Session();
  session.connect();
  const post = (method: string, params: object = {}) =>
    new Promise<unknown>((resolve, reject) =>
      session.post(
        method,
        params,
        (err: unknown, r: unknown) => err ? reject(err) : resolve(r),
      )
    );
  await post("HeapProfiler.enable");
  await post("HeapProfiler.startSampling", {
    samplingInterval: 256,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  const external = await run();
  const { profile } = await post("HeapProfiler.stopSampling") as {
    profile: { head: ProfileNode };
  };
  session.disconnect();
  const bySite = new Map<string, number>();
  const walk = (node: ProfileNode, caller: string) => {
    const f = node.callFrame;
    const file = f.url.slice(f.url.lastIndexOf("/") + 1);
    const site = `${f.functionName || "(anonymous)"} ${file}:${
      f.lineNumber + 1
    }`;
    if (node.selfSize > 0) {
      const name = `${site} ← ${caller}`;
      bySite.set(name, (bySite.get(name) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child, site);
  };
  walk(profile.head, "");
  const sites = [...bySite].sort((x, y) => y[1] - x[1]);
  const heap = sites.reduce((sum, [, bytes]) => sum + bytes, 0);
  return { heap, external, sites };
}

function printAllocations(
  side: string,
  a: Awaited<ReturnType<typeof sampled>>,
) {
  console.error(
    `${side}: ${round(a.heap / N)} B of heap and ${
      round(a.external / N)
    } B of ArrayBuffers a message; heap by function (← caller):`,
  );
  for (const [site, bytes] of a.sites.slice(0, 20)) {
    console.error(`  ${String(round(bytes / N)).padStart(6)} B  ${site}`);
  }
}

const seal: number[] = [];
const open: number[] = [];
const sealAll: number[] = [];
const openAll: number[] = [];
const sealWorker: number[] = [];
const openWorker: number[] = [];
const payload = "x".repeat(1024);
for (let r = 0; r < WARMUP + ROUNDS + (ALLOC ? 1 : 0); r++) {
  const envelopes = Array.from(
    { length: N },
    () => createEnvelope({ type: "event", topic, source: "bench", payload }),
  );
  pub.kept.length = 0;
  const profiled = ALLOC && r === WARMUP + ROUNDS;
  const sealStep = (e: Envelope) => sealer.publish(topic, e);
  if (profiled) {
    printAllocations("seal", await sampled(() => windows(envelopes, sealStep)));
  }
  const wire = () =>
    pub.kept.map((e) => JSON.parse(JSON.stringify(e)) as Envelope);
  if (profiled) {
    const copies = wire();
    opened = 0;
    printAllocations("open", await sampled(() => windows(copies, sub.deliver)));
    if (opened !== N) throw new Error(`opened ${opened} of ${N}`);
    break;
  }
  let c0 = mainThreadCpuMs(), p0 = cpuMs("self"), w0 = threadCpuMs().workers;
  await windows(envelopes, sealStep);
  const sealUs = (mainThreadCpuMs() - c0) * 1000 / N;
  const sealAllUs = (cpuMs("self") - p0) * 1000 / N;
  const sealWorkerUs = (threadCpuMs().workers - w0) * 1000 / N;
  const copies = wire();
  opened = 0;
  c0 = mainThreadCpuMs();
  p0 = cpuMs("self");
  w0 = threadCpuMs().workers;
  await windows(copies, sub.deliver);
  const openUs = (mainThreadCpuMs() - c0) * 1000 / N;
  const openAllUs = (cpuMs("self") - p0) * 1000 / N;
  const openWorkerUs = (threadCpuMs().workers - w0) * 1000 / N;
  if (opened !== N) throw new Error(`opened ${opened} of ${N}`);
  if (r >= WARMUP) {
    seal.push(sealUs);
    open.push(openUs);
    sealAll.push(sealAllUs);
    openAll.push(openAllUs);
    sealWorker.push(sealWorkerUs);
    openWorker.push(openWorkerUs);
  }
  console.error(
    `round ${r + 1}${r < WARMUP ? " (warm-up)" : ""}: seal ${
      round(sealUs, 1)
    } µs, open ${round(openUs, 1)} µs of main-thread CPU per message (worker ${
      round(sealWorkerUs, 1)
    }, ${round(openWorkerUs, 1)}; process ${round(sealAllUs, 1)}, ${
      round(openAllUs, 1)
    })`,
  );
}
await sealer.close();
await opener.close();
kv.close();
console.log(JSON.stringify({
  bench: "sealed_cost",
  unit: "µs of main-thread CPU per message",
  seal: round(median(seal), 1),
  open: round(median(open), 1),
  worker_thread: {
    seal: round(median(sealWorker), 1),
    open: round(median(openWorker), 1),
  },
  process: { seal: round(median(sealAll), 1), open: round(median(openAll), 1) },
  worker: WORKER,
  messages: N,
  rounds: ROUNDS,
  loadavg: Deno.readTextFileSync("/proc/loadavg").trim(),
}));
