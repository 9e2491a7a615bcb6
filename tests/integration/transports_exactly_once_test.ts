/**
 * Exactly-once through a real crash: a consumer process commits its work
 * (with the dedup mark, in one KV atomic) and is SIGKILLed before the ack;
 * Redis keeps the message pending and hands it to a second process, which
 * acks it without calling its handler, so the work is done once. The same
 * run at at-least-once does the work twice, so the test bites.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createEnvelope } from "../../core/envelope.ts";
import { connectRedisStreams } from "../../transports/redis-streams/transport.ts";
import { poll, REPO } from "./_process.ts";

const url = Deno.env.get("REDIS_URL");
const ignore = !url;
if (ignore) {
  console.log(
    'ignored: transports exactly-once: REDIS_URL is not set (run: eval "$(deno task services)")',
  );
}
const CONSUMER = new URL("./_exactly_once_consumer.ts", import.meta.url)
  .pathname;

/** A consumer process and its stdout lines as they come. */
function consumer(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", CONSUMER, ...args],
    cwd: REPO,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: string[] = [];
  const waiters: [RegExp, (line: string) => void][] = [];
  (async () => {
    let buf = "";
    for await (
      const chunk of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        for (const [re, resolve] of waiters) if (re.test(line)) resolve(line);
      }
    }
  })();
  return {
    child,
    lines,
    /** Resolves with the first line matching `re` (seen or to come). */
    line(re: RegExp, timeoutMs = 30_000): Promise<string> {
      const seen = lines.find((l) => re.test(l));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no line matching ${re}; got ${lines}`)),
          timeoutMs,
        );
        waiters.push([re, (l) => {
          clearTimeout(timer);
          resolve(l);
        }]);
      });
    },
  };
}

async function pending(topic: string): Promise<number> {
  const out = await new Deno.Command("redis-cli", {
    args: ["-u", url!, "XPENDING", `plexus:${topic}`, "billing"],
  }).output();
  return Number(new TextDecoder().decode(out.stdout).split("\n")[0]);
}

/**
 * Runs the crash scenario; returns how many times the work was done and what
 * the second process did with the redelivery.
 */
async function crashBeforeAck(
  delivery: string,
): Promise<{ paid: bigint; redelivery: string }> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-exactly-once-" });
  const kvPath = join(dir, "dedup.kv");
  const topic = `pay.${crypto.randomUUID().slice(0, 8)}`;
  const publisher = await connectRedisStreams({ url });
  const first = consumer([kvPath, topic, delivery, "crash", "c1"]);
  let second: ReturnType<typeof consumer> | undefined;
  try {
    await first.line(/^ready$/);
    const m = createEnvelope({
      type: "event",
      topic,
      source: "exactly-once-test",
      payload: { amount: 10 },
    });
    await publisher.publish(topic, m);
    await first.line(new RegExp(`^committed ${m.id}$`));
    first.child.kill("SIGKILL");
    assert.equal((await first.child.status).signal, "SIGKILL");
    assert.equal(
      await pending(topic),
      1,
      "the message was acked before the kill",
    );

    second = consumer([kvPath, topic, delivery, "serve", "c2"]);
    await second.line(/^ready$/);
    const redelivery = (await second.line(
      new RegExp(`^(committed|duplicate) ${m.id}$`),
    )).split(" ")[0];
    await poll(async () => (await pending(topic)) === 0, "the ack", 30_000);
    second.child.kill("SIGTERM");
    await second.child.status;
    second = undefined;
    const kv = await Deno.openKv(kvPath);
    try {
      const paid = (await kv.get<Deno.KvU64>(["paid", m.id])).value?.value;
      return { paid: paid ?? 0n, redelivery };
    } finally {
      kv.close();
    }
  } finally {
    for (const c of [first, second]) {
      try {
        c?.child.kill("SIGKILL");
        await c?.child.status;
      } catch { /* already exited */ }
    }
    await publisher.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name:
    "transports exactly-once: a consumer SIGKILLed after its commit and before its ack: the redelivered message is acked unhandled, the work done once",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.deepEqual(await crashBeforeAck("exactly-once"), {
      paid: 1n,
      redelivery: "duplicate",
    });
  },
});

Deno.test({
  name:
    "transports exactly-once: the same crash at at-least-once does the work twice (what the mark prevents)",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.deepEqual(await crashBeforeAck("at-least-once"), {
      paid: 2n,
      redelivery: "committed",
    });
  },
});
