/**
 * The transport conformance suite (DESIGN §3): one set of cases every
 * {@linkcode Transport} runs, chosen by its declared
 * {@linkcode TransportCaps}. Plexus's own transports run it, and so can a
 * transport written outside this repository.
 *
 * {@linkcode conformance} registers one `Deno.test` per case. Each case calls
 * your `makeTransport()` once per simulated node (so every call must return
 * a new, connected transport on the same broker) and closes what it made.
 * A case that does not apply to the transport's caps passes with a note
 * saying so.
 *
 * The assertion helpers and {@linkcode CASES} are exported too, so a test
 * can show that a deliberately broken transport fails a case.
 *
 * @example A third-party transport runs the suite
 * ```ts ignore
 * // my_transport_test.ts, run with `deno test -A`
 * import { conformance } from "@plexus/host/testing";
 * import { makeMyTransport } from "./my_transport.ts";
 *
 * conformance("my-transport", () => makeMyTransport());
 * ```
 *
 * @module
 */
import { createEnvelope, type Envelope } from "../core/envelope.ts";
import {
  type DeadLetter,
  type Delivery,
  envelopeBytes,
  type Transport,
  type TransportCaps,
  TransportError,
} from "../core/transport.ts";

/** Options of {@linkcode conformance}. */
export interface ConformanceOptions {
  /**
   * Reason to ignore every case (e.g. the broker is not configured); the
   * cases are still registered, as ignored, and the reason is printed.
   */
  ignore?: string;
  /** Longest wait for an expected delivery. @default {10000} */
  timeoutMs?: number;
  /**
   * Deno's op and resource sanitizers on each case; turn them off for a
   * client library that keeps timers or sockets after `close()`.
   * @default {true}
   */
  sanitize?: boolean;
  /**
   * URL of a module whose default export, `() => Promise<Transport>`, makes
   * this transport from the environment. It enables the case that SIGKILLs
   * a consumer running in a process of its own (started with `deno run -A`
   * on that module). Applies only to durable transports with groups.
   */
  connectModule?: string;
  /**
   * Kills and restarts the broker, resolving once it answers again. It
   * enables the case that checks no acknowledged message is lost across a
   * restart. Applies only to durable transports.
   */
  restartBroker?: () => Promise<void>;
}

/** What a case may use beyond `makeTransport`: the process-level hooks. */
export type CaseContext = Pick<
  ConformanceOptions,
  "connectModule" | "restartBroker"
>;

/**
 * Makes one connected transport (one "node"). Every call must return a new
 * transport on the same broker, so that the suite can run several members
 * of one group.
 */
export type MakeTransport = () => Transport | Promise<Transport>;

/** One conformance case. */
export interface ConformanceCase {
  /** What the case checks, as it appears in the test name. */
  name: string;
  /**
   * Whether the case applies to a transport with these caps, with or
   * without `deadLetters()`, given the hooks in `ctx`.
   */
  applies(
    caps: TransportCaps,
    hasDeadLetters: boolean,
    ctx: CaseContext,
  ): boolean;
  /**
   * Runs the case: makes the transports it needs with `make`, waits at most
   * about `timeoutMs` for each expected delivery, closes what it made, and
   * rejects with a message naming what went wrong.
   */
  run(
    make: MakeTransport,
    timeoutMs: number,
    ctx?: CaseContext,
  ): Promise<void>;
}

/** Fails with `message` unless `cond`. */
function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/**
 * Polls `fn` every 10 ms until it returns a value other than `undefined` or
 * `false`, and resolves with that value; rejects with
 * `Timed out after N ms waiting for WHAT` after `timeoutMs`.
 *
 * @example Usage
 * ```ts
 * import { waitFor } from "./conformance.ts";
 * const started = Date.now();
 * const ms = await waitFor("50 ms to pass", () => {
 *   const t = Date.now() - started;
 *   return t >= 50 && t;
 * }, 1000);
 * ```
 */
export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Throws unless each id in `published` was received exactly once across the
 * group's members (`receivedByMember[i]`: the ids member `i` got) and no
 * other id was. With `shared`, every member must have received at least one;
 * `group` names the group in the message.
 */
export function assertOncePerGroup(
  published: string[],
  receivedByMember: string[][],
  options: { shared?: boolean; group?: string } = {},
): void {
  const label = options.group ? ` in group '${options.group}'` : "";
  const counts = new Map<string, number>();
  for (const ids of receivedByMember) {
    for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  const dup = [...counts].filter(([, n]) => n > 1);
  check(
    dup.length === 0,
    `${dup.length} message(s) delivered more than once${label}, e.g. '${
      dup[0]?.[0]
    }' ${dup[0]?.[1]} times`,
  );
  const missing = published.filter((id) => !counts.has(id));
  check(
    missing.length === 0,
    `${missing.length} of ${published.length} message(s) never delivered${label}, e.g. '${
      missing[0]
    }'`,
  );
  const extra = [...counts.keys()].filter((id) => !published.includes(id));
  check(extra.length === 0, `unexpected message(s)${label}: ${extra[0]}`);
  if (options.shared) {
    const idle = receivedByMember.findIndex((ids) => ids.length === 0);
    check(
      idle < 0,
      `member ${idle + 1}${label} received nothing: work not shared`,
    );
  }
}

/**
 * Throws unless, per key, the handlers started in ascending `seq` order
 * (`starts`, in start order) and none overlapped (`overlaps`: the keys of
 * handlers that started while another with the same key was running).
 */
export function assertPerKeyOrder(
  starts: { key: string; seq: number }[],
  overlaps: string[],
): void {
  check(
    overlaps.length === 0,
    `messages with key '${overlaps[0]}' were handled concurrently`,
  );
  const last = new Map<string, number>();
  for (const { key, seq } of starts) {
    const prev = last.get(key) ?? -1;
    check(seq > prev, `key '${key}': message ${seq} started after ${prev}`);
    last.set(key, seq);
  }
}

/**
 * Finds the one dead letter of message `id` in `letters` and checks its
 * reason, attempts and error history (each only if given in `expect`);
 * throws otherwise, and returns it if all hold.
 */
export function assertDeadLetter(
  letters: DeadLetter[],
  id: string,
  expect: { reason?: RegExp; errors?: string[]; attempts?: number },
): DeadLetter {
  const found = letters.filter((l) => l.envelope.id === id);
  check(found.length > 0, `message '${id}' is not in the dead-letter queue`);
  check(
    found.length === 1,
    `message '${id}' dead-lettered ${found.length} times`,
  );
  const l = found[0];
  if (expect.reason) {
    check(
      expect.reason.test(l.reason),
      `dead letter reason '${l.reason}' does not match ${expect.reason}`,
    );
  }
  if (expect.attempts !== undefined) {
    check(
      l.attempts === expect.attempts,
      `dead letter attempts ${l.attempts}, expected ${expect.attempts}`,
    );
  }
  if (expect.errors) {
    const seen = l.errors.map((e) => e.error);
    check(
      JSON.stringify(seen) === JSON.stringify(expect.errors),
      `dead letter error history ${JSON.stringify(seen)}, expected ${
        JSON.stringify(expect.errors)
      }`,
    );
    l.errors.forEach((e, i) =>
      check(
        e.attempt === i + 1,
        `error ${i} has attempt ${e.attempt}, expected ${i + 1}`,
      )
    );
  }
  return l;
}

function topicFor(name: string): string {
  return `conformance.${name}.${crypto.randomUUID().slice(0, 8)}`;
}

function envelope(
  topic: string,
  payload: unknown,
  extra: Partial<Envelope> = {},
): Envelope {
  return createEnvelope({
    type: "event",
    topic,
    source: "conformance",
    payload,
    ...extra,
  });
}

/** Makes `n` transports, runs `fn`, closes them all. */
async function withTransports(
  make: MakeTransport,
  n: number,
  fn: (ts: Transport[]) => Promise<void>,
): Promise<void> {
  const ts: Transport[] = [];
  try {
    for (let i = 0; i < n; i++) ts.push(await make());
    await fn(ts);
  } finally {
    await Promise.allSettled(ts.map((t) => t.close()));
  }
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Publishes `n` events, returns their ids. */
async function publishMany(
  t: Transport,
  topic: string,
  n: number,
): Promise<string[]> {
  const ids: string[] = [];
  await Promise.all(
    Array.from({ length: n }, (_, i) => {
      const e = envelope(topic, { i });
      ids.push(e.id);
      return t.publish(topic, e);
    }),
  );
  return ids;
}

/**
 * A consumer running in a process of its own (see {@linkcode spawnConsumer})
 * and the JSON lines it prints: `{"ready":true}` once subscribed, then
 * `{"got":ID,"attempts":N,"payload":…}` per delivery.
 */
export interface ChildConsumer {
  /**
   * Takes the next line that has the field `field` (e.g. `"ready"`,
   * `"got"`); rejects if none comes within `timeoutMs` or the process exits.
   */
  next(field: string, timeoutMs: number): Promise<Record<string, string>>;
  /** Every JSON line printed so far, in order. */
  readonly lines: readonly Record<string, unknown>[];
  /** SIGKILLs the process (once; later calls do nothing). */
  kill(): void;
  /** Settles when the process has exited and its output is read. */
  exited: Promise<Deno.CommandStatus>;
}

/**
 * Starts a consumer in a process of its own (`deno run -A`): it imports
 * `connectModule`, whose default export `() => Promise<Transport>` makes the
 * transport, and subscribes to `topic` as a member of `group`. It holds each
 * delivery until killed (`mode` `"hold"`) or acks it after MS ms
 * (`"ack:MS"`).
 */
export function spawnConsumer(
  connectModule: string,
  topic: string,
  group: string,
  mode = "hold",
): ChildConsumer {
  // A URL, not a path: this module may be loaded from a registry.
  const script = new URL("./_consumer_child.ts", import.meta.url).href;
  // -A: the child runs whichever transport module the suite is given.
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", script, connectModule, topic, group, mode],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: Record<string, string>[] = [];
  const all: Record<string, unknown>[] = [];
  let notify = () => {};
  let ended = false;
  const reading = (async () => {
    let buf = "";
    for await (
      const chunk of proc.stdout.pipeThrough(new TextDecoderStream())
    ) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line.startsWith("{")) {
          const parsed = JSON.parse(line);
          lines.push(parsed);
          all.push(parsed);
        }
        notify();
      }
    }
    ended = true;
    notify();
  })();
  let killed = false;
  return {
    lines: all,
    async next(field, timeoutMs) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const i = lines.findIndex((l) => field in l);
        if (i >= 0) return lines.splice(i, 1)[0];
        check(!ended, `the consumer process exited before '${field}'`);
        const left = end - Date.now();
        check(
          left > 0,
          `no '${field}' from the consumer process in ${timeoutMs} ms`,
        );
        await new Promise<void>((r) => {
          notify = r;
          setTimeout(r, Math.min(left, 100));
        });
      }
    },
    kill() {
      if (killed) return;
      killed = true;
      try {
        proc.kill("SIGKILL");
      } catch { /* already gone */ }
    },
    exited: proc.status.then(async (s) => {
      await reading;
      return s;
    }),
  };
}

/**
 * Every case, in order, as {@linkcode conformance} registers them; run one
 * directly to show that a broken transport fails it.
 *
 * @example Running one case against a transport
 * ```ts
 * import { CASES, memoryTransport, MemoryBroker, stopBroker } from "./mod.ts";
 * const broker = new MemoryBroker();
 * const c = CASES.find((c) => c.name.includes("two groups"))!;
 * await c.run(() => memoryTransport({ broker }), 5000);
 * stopBroker(broker);
 * ```
 */
export const CASES: ConformanceCase[] = [
  {
    name: "a subscriber receives every message published after it subscribed",
    applies: () => true,
    run: (make, timeoutMs) =>
      withTransports(make, 2, async ([a, b]) => {
        const topic = topicFor("pubsub");
        const got: string[] = [];
        let payloadOk = true;
        await b.subscribe(topic, async (d) => {
          got.push(d.envelope.id);
          payloadOk &&=
            typeof (d.envelope.payload as { i: number }).i === "number" &&
            d.topic === topic && d.attempts === 1;
          await d.ack();
        });
        const ids = await publishMany(a, topic, 20);
        await waitFor(`20 messages (have ${got.length})`, () =>
          got.length >= 20, timeoutMs);
        await delay(100);
        assertOncePerGroup(ids, [got]);
        check(payloadOk, "a delivery lost its payload, topic or attempts = 1");
      }),
  },
  {
    name: "one group shares the work: each message reaches one member once",
    applies: (caps) => caps.groups,
    run: (make, timeoutMs) =>
      withTransports(make, 3, async ([pub, m1, m2]) => {
        const topic = topicFor("group");
        const got: string[][] = [[], []];
        for (const [i, t] of [m1, m2].entries()) {
          await t.subscribe(topic, async (d) => {
            got[i].push(d.envelope.id);
            await delay(10);
            await d.ack();
          }, { group: "workers", maxInFlight: 2 });
        }
        const ids = await publishMany(pub, topic, 40);
        await waitFor(
          "40 messages across the group",
          () => got[0].length + got[1].length >= 40,
          timeoutMs,
        );
        await delay(200);
        assertOncePerGroup(ids, got, { shared: true, group: "workers" });
      }),
  },
  {
    name: "two groups each receive every message",
    applies: (caps) => caps.groups,
    run: (make, timeoutMs) =>
      withTransports(make, 3, async ([pub, a, b]) => {
        const topic = topicFor("groups");
        const got: Record<string, string[]> = { g1: [], g2: [] };
        await a.subscribe(topic, async (d) => {
          got.g1.push(d.envelope.id);
          await d.ack();
        }, { group: "g1" });
        await b.subscribe(topic, async (d) => {
          got.g2.push(d.envelope.id);
          await d.ack();
        }, { group: "g2" });
        const ids = await publishMany(pub, topic, 20);
        await waitFor("20 messages in each group", () =>
          got.g1.length >= 20 && got.g2.length >= 20, timeoutMs);
        await delay(100);
        assertOncePerGroup(ids, [got.g1], { group: "g1" });
        assertOncePerGroup(ids, [got.g2], { group: "g2" });
      }),
  },
  {
    name: "nak with a delay redelivers no sooner than the delay",
    applies: () => true,
    run: (make, timeoutMs) =>
      withTransports(make, 1, async ([t]) => {
        const topic = topicFor("nak");
        const nakDelay = 300;
        const seen: { attempts: number; at: number }[] = [];
        let nakAt = 0;
        await t.subscribe(topic, async (d) => {
          seen.push({ attempts: d.attempts, at: performance.now() });
          if (d.attempts === 1) {
            nakAt = performance.now();
            await d.nak(nakDelay, "try later");
          } else await d.ack();
        }, { group: "nak" });
        await t.publish(topic, envelope(topic, "x"));
        await waitFor("the redelivery", () => seen.length >= 2, timeoutMs);
        await delay(100);
        check(seen.length === 2, `delivered ${seen.length} times, expected 2`);
        check(
          seen[1].attempts === 2,
          `redelivery has attempts ${seen[1].attempts}, expected 2`,
        );
        const waited = seen[1].at - nakAt;
        // 1 ms of slack for timer granularity.
        check(
          waited >= nakDelay - 1,
          `redelivered after ${
            waited.toFixed(0)
          } ms, before the ${nakDelay} ms delay`,
        );
      }),
  },
  {
    name: "term sends the message to the dead-letter queue at once",
    applies: (_caps, dlq) => dlq,
    run: (make, timeoutMs) =>
      withTransports(make, 1, async ([t]) => {
        const topic = topicFor("term");
        let calls = 0;
        await t.subscribe(topic, async (d) => {
          calls++;
          await d.term("poison: bad schema");
        }, { group: "term" });
        const e = envelope(topic, "poison", {
          delivery: {
            guarantee: "at-least-once",
            maxAttempts: 5,
            backoff: "none",
            timeoutMs: 30_000,
            persistent: true,
          },
        });
        await t.publish(topic, e);
        const letters = await waitFor("the dead letter", async () => {
          const l = await t.deadLetters!(topic);
          return l.length > 0 && l;
        }, timeoutMs);
        await delay(200);
        assertDeadLetter(letters, e.id, { reason: /poison: bad schema/ });
        check(calls === 1, `handler ran ${calls} times after term, expected 1`);
      }),
  },
  {
    name:
      "after maxAttempts failures the message is dead-lettered with its error history",
    applies: (_caps, dlq) => dlq,
    run: (make, timeoutMs) =>
      withTransports(make, 1, async ([t]) => {
        const topic = topicFor("maxattempts");
        let calls = 0;
        await t.subscribe(topic, () => {
          calls++;
          return Promise.reject(new Error(`boom ${calls}`));
        }, { group: "fail" });
        const e = envelope(topic, "fails", {
          delivery: {
            guarantee: "at-least-once",
            maxAttempts: 3,
            backoff: "none",
            timeoutMs: 30_000,
            persistent: true,
          },
        });
        await t.publish(topic, e);
        const letters = await waitFor("the dead letter", async () => {
          const l = await t.deadLetters!(topic);
          return l.length > 0 && l;
        }, timeoutMs);
        await delay(200);
        assertDeadLetter(letters, e.id, {
          reason: /max attempts/,
          attempts: 3,
          errors: ["boom 1", "boom 2", "boom 3"],
        });
        check(calls === 3, `handler ran ${calls} times, expected 3`);
      }),
  },
  {
    name: "messages with one key are handled in order, one at a time",
    applies: (caps) => caps.ordering !== "none",
    run: (make, timeoutMs) =>
      withTransports(make, 3, async ([pub, ...members]) => {
        const topic = topicFor("order");
        const keys = ["k0", "k1", "k2", "k3"];
        const perKey = 15;
        const starts: { key: string; seq: number }[] = [];
        const overlaps: string[] = [];
        const busy = new Set<string>();
        let done = 0;
        const handler = async (d: Delivery) => {
          const { key, seq } = d.envelope.payload as {
            key: string;
            seq: number;
          };
          if (busy.has(key)) overlaps.push(key);
          busy.add(key);
          starts.push({ key, seq });
          await delay(Math.random() * 5);
          busy.delete(key);
          done++;
          await d.ack();
        };
        const caps = pub.caps;
        for (const t of caps.groups ? members : members.slice(0, 1)) {
          await t.subscribe(
            topic,
            handler,
            caps.groups
              ? { group: "ordered", maxInFlight: 4 }
              : { maxInFlight: 4 },
          );
        }
        for (let seq = 0; seq < perKey; seq++) {
          await Promise.all(
            keys.map((key) =>
              pub.publish(topic, envelope(topic, { key, seq }), { key })
            ),
          );
        }
        const total = keys.length * perKey;
        await waitFor(
          `${total} ordered messages (have ${done})`,
          () => done >= total,
          timeoutMs,
        );
        assertPerKeyOrder(starts, overlaps);
      }),
  },
  {
    name:
      "a message of exactly maxMessageBytes is accepted and one byte more is refused",
    applies: () => true,
    run: (make, timeoutMs) =>
      withTransports(make, 1, async ([t]) => {
        const topic = topicFor("size");
        const limit = t.caps.maxMessageBytes;
        const base = envelope(topic, "");
        const fit = {
          ...base,
          payload: "x".repeat(limit - envelopeBytes(base)),
        };
        check(
          envelopeBytes(fit) === limit,
          "test bug: could not build an exact-size message",
        );
        const over = {
          ...fit,
          id: crypto.randomUUID(),
          payload: (fit.payload as string) + "x",
        };
        const got: string[] = [];
        await t.subscribe(topic, async (d) => {
          got.push(d.envelope.id);
          check(
            (d.envelope.payload as string).length ===
              (fit.payload as string).length,
            "payload changed",
          );
          await d.ack();
        });
        await t.publish(topic, fit);
        let refused: unknown;
        try {
          await t.publish(topic, over);
        } catch (err) {
          refused = err;
        }
        check(
          refused !== undefined,
          `a message of ${limit + 1} bytes was accepted (limit ${limit})`,
        );
        check(
          refused instanceof TransportError && refused.code === "too_large",
          `expected TransportError too_large, got ${refused}`,
        );
        check(
          (refused as Error).message.includes(String(limit)),
          `the error does not name the limit: ${(refused as Error).message}`,
        );
        await waitFor(
          "the exact-size message",
          () => got.includes(fit.id),
          timeoutMs,
        );
        await delay(100);
        check(!got.includes(over.id), "the refused message was delivered");
      }),
  },
  {
    name:
      "a consumer process SIGKILLed mid-message: the message is redelivered to another member",
    applies: (caps, _dlq, ctx) =>
      caps.durable && caps.groups && ctx.connectModule !== undefined,
    run: (make, timeoutMs, ctx) =>
      withTransports(make, 2, async ([pub, survivor]) => {
        const topic = topicFor("sigkill");
        const child = spawnConsumer(ctx!.connectModule!, topic, "crash");
        let redelivered: { id: string; attempts: number }[] = [];
        try {
          await child.next("ready", timeoutMs * 3);
          const e = envelope(topic, "held when killed");
          await pub.publish(topic, e);
          const got = await child.next("got", timeoutMs * 3);
          check(got.got === e.id, `the child got '${got.got}', not '${e.id}'`);
          child.kill();
          await child.exited;
          await survivor.subscribe(topic, async (d) => {
            redelivered.push({ id: d.envelope.id, attempts: d.attempts });
            await d.ack();
          }, { group: "crash" });
          await waitFor(
            "the killed consumer's message at the surviving member",
            () => redelivered.length > 0,
            timeoutMs * 4,
          );
          await delay(500);
          redelivered = [...redelivered];
          check(
            redelivered.length === 1 && redelivered[0].id === e.id,
            `after the kill the survivor got ${
              JSON.stringify(redelivered)
            }, expected '${e.id}' once`,
          );
        } finally {
          child.kill();
          await child.exited;
        }
      }),
  },
  {
    name: "the broker restarted during a run: no acknowledged message is lost",
    applies: (caps, _dlq, ctx) =>
      caps.durable && ctx.restartBroker !== undefined,
    run: (make, timeoutMs, ctx) =>
      withTransports(make, 2, async ([pub, sub]) => {
        const topic = topicFor("restart");
        const received = new Set<string>();
        let deliveries = 0;
        await sub.subscribe(topic, async (d) => {
          deliveries++;
          received.add(d.envelope.id);
          await d.ack();
        }, { group: "survive", maxInFlight: 4 });
        const acked: string[] = [];
        let refused = 0;
        let restarted = false;
        let afterRestart = 0;
        let restart: Promise<void> | undefined;
        let restartFailed: unknown;
        // The restart itself is bounded by `restartBroker` (a broker
        // recovering thousands of partitions takes as long as it takes);
        // publishing must then recover within timeoutMs × 6.
        let end = Date.now() + timeoutMs * 6;
        while (!restarted || afterRestart < 20) {
          if (restartFailed !== undefined) {
            throw new Error(
              `the broker did not restart: ${
                (restartFailed as Error)?.message ?? restartFailed
              }`,
              { cause: restartFailed },
            );
          }
          check(Date.now() < end, "publishing did not recover after restart");
          const e = envelope(topic, { n: acked.length });
          try {
            await pub.publish(topic, e);
            acked.push(e.id);
            if (restarted) afterRestart++;
          } catch {
            refused++; // not acknowledged: allowed to be lost
            await delay(50);
          }
          if (acked.length === 20 && !restart) {
            end = Infinity;
            restart = ctx!.restartBroker!().then(() => {
              restarted = true;
              end = Date.now() + timeoutMs * 6;
            }, (err) => {
              restartFailed = err ?? new Error("restartBroker rejected");
            });
          }
          await delay(5);
        }
        await restart;
        // The counts are taken when the wait ends (a count in the waited-for
        // text would be the one at its start).
        await waitFor(
          `all ${acked.length} acknowledged messages`,
          () => acked.every((id) => received.has(id)),
          timeoutMs * 6,
        ).catch((err) => {
          const missing = acked.filter((id) => !received.has(id));
          throw new Error(
            `${(err as Error).message}: ${missing.length} never arrived (${
              missing.slice(0, 5).join(", ")
            }); ${received.size} distinct received`,
            { cause: err },
          );
        });
        console.log(
          `  restart: ${acked.length} acknowledged, ${refused} refused during the restart, ${
            deliveries - received.size
          } redelivered`,
        );
      }),
  },
  {
    name:
      "request/reply: a request reaches the named node's responder with its headers, and resolves with the answer",
    applies: (caps) => caps.requestReply === true,
    run: (make, timeoutMs) =>
      withTransports(make, 2, async ([a, b]) => {
        const topic = topicFor("rr");
        const responder = await b.respond!(topic, (body, info) =>
          Promise.resolve({ body, headers: info.headers, from: info.from }));
        const bId = b.responders!(topic)[0];
        check(bId !== undefined, "the responding node does not list itself");
        await waitFor(
          "the requester to see the responder",
          () =>
            a.responders!(topic).includes(bId),
          timeoutMs,
        );
        check(
          a.listResponders!().get(topic)?.includes(bId),
          "listResponders() does not list the responder",
        );
        const answers = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            a.request!(bId, topic, { i }, {
              timeoutMs,
              headers: { cid: `c-${i}` },
            })),
        ) as { body: { i: number }; headers: Record<string, string> }[];
        answers.forEach((x, i) => {
          check(x.body.i === i, `answer ${i} is for request ${x.body.i}`);
          check(x.headers.cid === `c-${i}`, `request ${i} lost its headers`);
        });
        await responder.close();
        await waitFor(
          "the closed responder to drop out",
          () =>
            !a.responders!(topic).includes(bId),
          timeoutMs,
        );
      }),
  },
  {
    name:
      "request/reply: a failing responder, a node that does not answer and a deadline each reject",
    applies: (caps) => caps.requestReply === true,
    run: (make, timeoutMs) =>
      withTransports(make, 2, async ([a, b]) => {
        const failing = topicFor("rr-fail");
        const silent = topicFor("rr-silent");
        await b.respond!(failing, () => Promise.reject(new Error("boom")));
        await b.respond!(silent, () => new Promise(() => {}));
        const bId = b.responders!(failing)[0];
        await waitFor(
          "the requester to see the responders",
          () => a.responders!(silent).includes(bId),
          timeoutMs,
        );
        const rejection = async (p: Promise<unknown>) => {
          try {
            await p;
          } catch (err) {
            return err as Error & { code?: string };
          }
          throw new Error("the request resolved");
        };
        const failed = await rejection(
          a.request!(bId, failing, 1, { timeoutMs }),
        );
        check(
          /boom/.test(failed.message),
          `a failing responder's error does not say why: ${failed.message}`,
        );
        const nobody = await rejection(
          a.request!("no-such-node", failing, 1, { timeoutMs }),
        );
        check(
          nobody.code === "unavailable",
          `a request to an unknown node rejected with ${nobody.code}`,
        );
        const t0 = Date.now();
        let guard: ReturnType<typeof setTimeout> | undefined;
        const late = await rejection(
          Promise.race([
            a.request!(bId, silent, 1, { timeoutMs: 100 }),
            new Promise((_, reject) => {
              guard = setTimeout(
                () =>
                  reject(
                    new Error(
                      `Timed out after ${timeoutMs} ms waiting for a 100 ms request deadline`,
                    ),
                  ),
                timeoutMs,
              );
            }),
          ]).finally(() => clearTimeout(guard)),
        );
        check(
          late.name === "TimeoutError",
          `a silent responder ended with ${late.name} after ${
            Date.now() - t0
          } ms: ${late.message}`,
        );
      }),
  },
];

/**
 * Registers one `Deno.test` per conformance case, named
 * `conformance NAME: CASE`, for the transport `name`. Each test makes a
 * transport with `makeTransport` to read its caps, and runs the case if it
 * applies (else passes, printing why not). Call it at the top level of a
 * test module.
 *
 * @example A third-party transport runs the suite
 * ```ts ignore
 * // my_transport_test.ts, run with `deno test -A`
 * import { conformance } from "@plexus/host/testing";
 * import { makeMyTransport } from "./my_transport.ts";
 *
 * conformance("my-transport", () => makeMyTransport());
 * ```
 *
 * @example With a broker that is not always there
 * ```ts ignore
 * import { conformance } from "@plexus/host/testing";
 * import { makeMyTransport } from "./my_transport.ts";
 *
 * const url = Deno.env.get("MY_BROKER_URL");
 * conformance("my-transport", () => makeMyTransport(url!), {
 *   ignore: url ? undefined : "MY_BROKER_URL is not set",
 *   // a module whose default export connects from the environment:
 *   connectModule: new URL("./connect.ts", import.meta.url).href,
 * });
 * ```
 */
export function conformance(
  name: string,
  makeTransport: MakeTransport,
  options: ConformanceOptions = {},
): void {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const sanitize = options.sanitize ?? true;
  if (options.ignore) {
    console.log(`ignored: conformance of ${name}: ${options.ignore}`);
  }
  for (const c of CASES) {
    Deno.test({
      name: `conformance ${name}: ${c.name}`,
      ignore: options.ignore !== undefined,
      sanitizeOps: sanitize,
      sanitizeResources: sanitize,
      async fn() {
        const probe = await makeTransport();
        const applies = c.applies(
          probe.caps,
          typeof probe.deadLetters === "function",
          options,
        );
        await probe.close();
        if (!applies) {
          console.log(
            `  (not applicable to ${name}: caps ${
              JSON.stringify(probe.caps)
            }, connectModule ${
              options.connectModule ? "set" : "unset"
            }, restartBroker ${options.restartBroker ? "set" : "unset"})`,
          );
          return;
        }
        await c.run(makeTransport, timeoutMs, options);
      },
    });
  }
}
