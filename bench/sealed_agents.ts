/**
 * Sealed payloads for agents (docs/security.md, "Agents as recipients"):
 * messages/s from a publish on a topic sealed for an agent to the agent's
 * handler with the plaintext: Redis Streams, the node's forwarder (checks,
 * never opens), the gateway's durable send, the SDK agent opening it. The
 * baseline, in the same run, is the same agent getting the same payloads
 * through a plain durable `gateway.send` (no broker, no sealing).
 *
 *   eval "$(deno task services)"
 *   deno run -A bench/sealed_agents.ts [--quick] [--messages N] [--rounds R]
 *
 * One in-process node (tests/gateway/_node.ts) on Redis, one SDK agent on
 * its `WS /ws/agent`. Each round starts a fresh node; sends and publishes
 * are awaited one at a time. Rounds alternate plain, sealed with
 * `sealed.forwardMaxInFlight` 1 (the default: an agent gets a topic's
 * messages in order) and 8; medians. Value: sealed with 8; ratio = that /
 * plain. Latency: from the envelope's timestamp (or the send) to the
 * handler, ms.
 *
 * @module
 */
import { createEnvelope } from "../core/envelope.ts";
import type { Transport } from "../core/transport.ts";
import { DEFAULT_CHANNELS } from "../gateway/policy.ts";
import { subscribeSealed } from "../sdk/sealed.ts";
import { startTestNode } from "../tests/gateway/_node.ts";
import {
  enrolledKey,
  sdkClient,
  seedOf,
} from "../tests/gateway/_sdk_helpers.ts";
import { info, isQuick, median, numFlag, rateRun, round } from "./_util.ts";

const url = Deno.env.get("REDIS_URL");
if (!url) {
  console.error('REDIS_URL is not set (run: eval "$(deno task services)")');
  Deno.exit(2);
}
const quick = isQuick();
const N = numFlag("--messages", quick ? 100 : 300);
const ROUNDS = numFlag("--rounds", quick ? 1 : 3);
const PAD = "x".repeat(200);

type Mode = "plain" | "sealed1" | "sealed8";

async function runOnce(dir: string, mode: Mode, round: number) {
  const run = `${round}${mode}${crypto.randomUUID().slice(0, 6)}`;
  const topic = `bench.${run}.keys`;
  const enrol = await startTestNode({ dir, name: `e${run}` });
  const key = await enrolledKey(enrol);
  await enrol.shutdown();
  const node = await startTestNode({
    dir,
    name: `n${run}`,
    config: {
      transport: "redis-streams",
      sealed: {
        topics: [{
          pattern: `bench.${run}.*`,
          recipients: [`agent:${key.id}`],
          deliver: { channel: "sealed", topics: [topic] },
        }],
        forwardMaxInFlight: mode === "sealed8" ? 8 : 1,
      },
    },
    pluginConfig: { "redis-streams": { url, prefix: `bench-sa-${run}:` } },
    gateway: {
      channels: {
        ...DEFAULT_CHANNELS,
        sealed: { subscribe: ["agent"], durable: true },
        plain: { subscribe: ["agent"], durable: true },
        "sealing-keys": { publish: ["agent"] },
      },
    },
  });
  const agent = sdkClient(node.ws, key);
  try {
    await agent.connect();
    const lat: number[] = [];
    const done = Promise.withResolvers<void>();
    const seen = (t: number) => {
      lat.push(Date.now() - t);
      if (lat.length === N) done.resolve();
    };
    if (mode === "plain") {
      await agent.subscribe(
        "plain",
        (m) => seen((m.payload as { t: number }).t),
      );
    } else {
      await subscribeSealed(agent, {
        seed: seedOf(key),
        handler: (m) => seen(m.envelope.timestamp),
      });
    }
    const transport = node.handle.kernel.get<Transport>(
      "transport:redis-streams",
    );
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      if (mode === "plain") {
        await node.gateway.api.send(key.id, "plain", {
          i,
          t: Date.now(),
          pad: PAD,
        });
      } else {
        await transport.publish(
          topic,
          createEnvelope({
            type: "event",
            topic,
            source: "bench",
            payload: { i, pad: PAD },
          }),
        );
      }
    }
    await done.promise;
    return rateRun(N, performance.now() - t0, lat);
  } finally {
    await agent.close();
    await node.shutdown();
  }
}

const dir = await Deno.makeTempDir({ prefix: "plexus-bench-sa-" });
const results: Record<Mode, { perS: number; p50: number; p99: number }[]> = {
  plain: [],
  sealed1: [],
  sealed8: [],
};
try {
  for (let r = 0; r < ROUNDS; r++) {
    for (const mode of ["plain", "sealed1", "sealed8"] as const) {
      const res = await runOnce(dir, mode, r);
      results[mode].push(res);
      info(
        `round ${r + 1} ${mode}: ${round(res.perS)} msg/s, p50 ${
          round(res.p50)
        } ms, p99 ${round(res.p99)} ms`,
      );
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
const med = (mode: Mode, k: "perS" | "p50" | "p99") =>
  round(median(results[mode].map((x) => x[k])), k === "perS" ? 0 : 1);
const value = med("sealed8", "perS");
const baseline = med("plain", "perS");
console.log(JSON.stringify({
  bench: "sealed_agents",
  metric: "sealed messages/s publish → agent handler (forwardMaxInFlight 8)",
  unit: "msg/s",
  value,
  baseline,
  ratio: round(value / baseline, 2),
  details: {
    messages: N,
    rounds: ROUNDS,
    sealed8: {
      perS: value,
      p50: med("sealed8", "p50"),
      p99: med("sealed8", "p99"),
    },
    sealed1: {
      perS: med("sealed1", "perS"),
      p50: med("sealed1", "p50"),
      p99: med("sealed1", "p99"),
    },
    plain: {
      perS: baseline,
      p50: med("plain", "p50"),
      p99: med("plain", "p99"),
    },
  },
  notes:
    "one node, one SDK agent, ~200 B payloads, one at a time; baseline: plain durable gateway.send to the same agent",
}));
Deno.exit(0);
