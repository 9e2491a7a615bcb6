/**
 * Agents as recipients of sealed payloads (docs/security.md, "Agents as
 * recipients"), with real components: an in-process node on Redis Streams
 * (from `REDIS_URL`) with the gateway, a real SDK agent connected to it over
 * `WS /ws/agent`, and a node recipient (a `sealedTransport` on its own Redis
 * connection with keys in the same KV). The node publishes to a topic sealed
 * for the agent and the node recipient; it forwards the message to the agent
 * unopened; both open it. Redis' stored bytes (redis-cli XRANGE) hold no
 * plaintext; refusals at the forwarder and at the agent carry their codes.
 */
import { flipCiphertext } from "../../core/security/_sealed_testing.ts";
import assert from "node:assert/strict";
import { createEnvelope, type Envelope } from "../../core/envelope.ts";
import type { Delivery, Transport } from "../../core/transport.ts";
import { generateKeyPair } from "../../core/security/hpke.ts";
import {
  SealedError,
  sealedOpener,
  sealedTransport,
  type SealingPolicy,
} from "../../core/security/sealed_transport.ts";
import {
  freshSealingKeys,
  kvSealingDirectory,
  signSealingKeyStatement,
} from "../../core/security/sealing_keys.ts";
import { AgentError } from "../../sdk/errors.ts";
import { waitFor } from "../../testing/conformance.ts";
import { createMetrics } from "../../core/observe/metrics.ts";
import { forwardSealedToAgents } from "../../core/security/sealed_forward.ts";
import { connectRedisStreams } from "../../transports/redis-streams/transport.ts";
import { DEFAULT_CHANNELS } from "../../gateway/policy.ts";
import { startTestNode } from "../gateway/_node.ts";
import { enrolledKey } from "../gateway/_sdk_helpers.ts";
import { connectSealedAgent, startSealedAgentNode } from "./_agent_node.ts";

const url = Deno.env.get("REDIS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const hasCli = await new Deno.Command("redis-cli", { args: ["--version"] })
  .output().then((o) => o.success, () => false);
const skip = !url
  ? 'REDIS_URL is not set (run: eval "$(deno task services)")'
  : !hasCli
  ? "redis-cli is not installed"
  : undefined;
if (skip && !required) console.log(`ignored: sealed agents: ${skip}`);

const MARKER = "agent-plaintext-marker-5be1";
const B64U = { alphabet: "base64url", omitPadding: true } as const;

async function redisCli(...args: string[]): Promise<string> {
  const out = await new Deno.Command("redis-cli", {
    args: ["-u", url!, ...args],
  }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test({
  name:
    "sealed agents: a message sealed for an agent and a node reaches both in plaintext through Redis and the gateway; the forwarding node never opens it; refusals carry their codes",
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    assert.ok(!skip, skip);
    const dir = await Deno.makeTempDir({ prefix: "plexus-sealed-agents-" });
    const run = crypto.randomUUID().slice(0, 8);
    const prefix = `sealed-agents-${run}:`;
    const topic = `sealedagents.${run}.keys`;
    const other = `sealedagents.${run}.other`;
    const cleanup: (() => Promise<unknown>)[] = [];
    try {
      const kvPath = `${dir}/shared.kv`;
      const { node, key, strangers: [stranger], policy } =
        await startSealedAgentNode(dir, {
          transport: "redis-streams",
          pluginConfig: { "redis-streams": { url, prefix } },
          pattern: `sealedagents.${run}.*`,
          topics: [topic, other],
          more: ["node:b"],
          strangers: 1,
        });
      cleanup.push(() => node.shutdown());

      // The node recipient: its own Redis connection, keys in the same KV.
      const kv = await Deno.openKv(kvPath);
      cleanup.push(() => Promise.resolve(kv.close()));
      const directory = kvSealingDirectory(kv, { cacheMs: 0 });
      const keysB = await freshSealingKeys("node:b", directory);
      const rawB = await connectRedisStreams({ url, prefix });
      cleanup.push(() => rawB.close());
      const b = sealedTransport(rawB, policy, keysB);
      const atB: Envelope[] = [];
      const bSub = await b.subscribe(topic, async (d: Delivery) => {
        atB.push(d.envelope);
        await d.ack();
      }, { group: "billing" });
      cleanup.push(() => bSub.close());

      // The agent, and one that is enrolled but no recipient.
      let skewMs = 0;
      const sealedAgent = await connectSealedAgent(
        node,
        key,
        () => Date.now() + skewMs,
      );
      const { agent, opened, refused } = sealedAgent;
      cleanup.push(() => agent.close());
      assert.equal(sealedAgent.id, `agent:${key.id}`);
      const outsider = await connectSealedAgent(node, stranger);
      cleanup.push(() => outsider.agent.close());
      const strangerOpened = outsider.opened;

      const transport = node.handle.kernel.get<Transport>(
        "transport:redis-streams",
      );
      const publish = (payload: unknown, timestamp?: number) => {
        const env = createEnvelope({
          type: "event",
          topic,
          source: "a",
          payload,
        });
        return transport.publish(topic, {
          ...env,
          ...(timestamp ? { timestamp } : {}),
        });
      };

      await t.step(
        "the agent and the node recipient both open it",
        async () => {
          await publish({ note: MARKER, n: 1 });
          const m = await waitFor(
            "the agent's opened message",
            () => opened[0],
            15_000,
          );
          assert.deepEqual(m.payload, { note: MARKER, n: 1 });
          assert.equal(m.from, "node:a");
          assert.equal(m.envelope.topic, topic);
          const atNode = await waitFor(
            "node b's opened message",
            () => atB[0],
            15_000,
          );
          assert.deepEqual(atNode.payload, { note: MARKER, n: 1 });
          assert.equal(atNode.headers["plexus-sealed-from"], "node:a");
          // The gateway carried the sealed envelope, not the plaintext.
          const carried = JSON.stringify(m.message.payload);
          assert.ok(!carried.includes(MARKER), carried);
          assert.ok(carried.includes('"plexus-sealed":"3"'), carried);
        },
      );

      await t.step(
        "the node refuses a key statement not signed by the enrolled key",
        async () => {
          const swapped = await generateKeyPair();
          const forged = await signSealingKeyStatement(
            (await crypto.subtle.generateKey({ name: "Ed25519" }, false, [
              "sign",
            ]) as CryptoKeyPair).privateKey,
            key.id,
            swapped.publicKey,
          );
          await assert.rejects(
            agent.request("sealing-keys", {
              op: "publish",
              x25519: swapped.publicKey.toBase64(B64U),
              sig: forged.toBase64(B64U),
            }),
            (err: Error) =>
              err instanceof AgentError && err.code === "bad_request" &&
              /not signed by the agent's enrolled key/.test(err.message),
          );
          // The published key is still the agent's own.
          const peer = await directory.lookup(`agent:${key.id}`);
          assert.deepEqual(peer?.x25519, sealedAgent.x25519);
          await assert.rejects(
            agent.request("sealing-keys", { op: "lookup", id: "node:nobody" }),
            /no published sealing key/,
          );
        },
      );

      await t.step("Redis stores only ciphertext", async () => {
        const keys = (await redisCli("--scan", "--pattern", `${prefix}*`))
          .split("\n").filter(Boolean);
        let stored = "";
        for (const k of keys) {
          if ((await redisCli("TYPE", k)).trim() !== "stream") continue;
          stored += await redisCli("XRANGE", k, "-", "+");
        }
        assert.ok(
          stored.includes('"plexus-sealed":"3"'),
          `no sealed entry in ${stored}`,
        );
        assert.ok(!stored.includes(MARKER), `plaintext in Redis: ${stored}`);
      });

      await t.step("the forwarding node did not open it", async () => {
        // Counted once the gateway's send returned (the agent may be first).
        await waitFor(
          "the forward counted",
          async () =>
            await node.metric("plexus_sealed_forwarded_total", {
              outcome: "forwarded",
            }) === 1,
          10_000,
        );
        assert.equal(
          await node.metric("plexus_sealed_messages_total", { op: "opened" }),
          0,
        );
      });

      const genuine = opened[0].message.payload as Envelope;
      const sendRaw = (to: string, env: unknown) =>
        node.gateway.api.send(to, "sealed", env, {
          messageType: "plexus.sealed",
        });
      const refusal = async (n: number) =>
        (await waitFor(
          `refusal ${n} at the agent`,
          () => refused[n - 1],
          10_000,
        ))
          .error;

      await t.step(
        "at the agent: a tampered ciphertext is bad_signature",
        async () => {
          await sendRaw(key.id, {
            ...genuine,
            payload: flipCiphertext(genuine.payload),
          });
          const err = await refusal(1);
          assert.ok(err instanceof SealedError);
          assert.equal(err.code, "bad_signature", err.message);
        },
      );

      await t.step(
        "at the agent: a re-addressed message is readdressed",
        async () => {
          await sendRaw(key.id, { ...genuine, topic: other });
          assert.equal((await refusal(2)).code, "readdressed");
        },
      );

      await t.step(
        "at the agent: a copy already handled is a replay",
        async () => {
          await sendRaw(key.id, genuine);
          assert.equal((await refusal(3)).code, "replay");
        },
      );

      await t.step("at the agent: outside the replay window", async () => {
        skewMs = 10 * 60_000;
        await sendRaw(key.id, { ...genuine, id: crypto.randomUUID() });
        const err = await refusal(4);
        // A new id changes the signed header: either check refuses it; the
        // window is checked first.
        assert.equal(err.code, "replay_window", err.message);
        skewMs = 0;
      });

      await t.step(
        "an agent that is no recipient gets nothing, and refuses a copy",
        async () => {
          assert.deepEqual(strangerOpened, []);
          await sendRaw(stranger.id, genuine);
          const err = await waitFor(
            "the outsider's refusal",
            () => outsider.refused[0]?.error,
            10_000,
          );
          assert.equal(err.code, "not_recipient", err.message);
          assert.deepEqual(strangerOpened, []);
          // The forwarder handed the message over once: to the recipient.
          assert.equal(
            await node.metric("plexus_sealed_forwarded_total", {
              outcome: "forwarded",
            }),
            1,
          );
        },
      );

      await t.step(
        "at the forwarder: refusals are dead-lettered with their code",
        async () => {
          const raw = await connectRedisStreams({ url, prefix });
          cleanup.push(() => raw.close());
          // Tampered on the broker.
          await raw.publish(topic, {
            ...genuine,
            id: crypto.randomUUID(),
            payload: flipCiphertext(genuine.payload, 0),
          });
          // The genuine message put on another topic of the rule.
          await raw.publish(other, { ...genuine, topic: other });
          // Sealed and signed by the node, but older than the window.
          await publish({ note: MARKER, old: true }, Date.now() - 3_600_000);
          for (
            const reason of ["bad_signature", "readdressed", "replay_window"]
          ) {
            await waitFor(
              `forwarder refusal ${reason}`,
              async () =>
                await node.metric("plexus_sealed_refused_total", { reason }) >=
                  1,
              15_000,
            );
          }
          const dead = await transport.deadLetters!(other);
          assert.ok(
            dead.some((d) => /^sealed readdressed/.test(d.reason)),
            JSON.stringify(dead.map((d) => d.reason)),
          );
          // None of them reached the agent.
          assert.equal(opened.length, 1);
          assert.equal(refused.length, 4);
        },
      );

      await t.step(
        "the node counts the refusals its agents reported",
        async () => {
          const expected: Record<string, number> = {
            bad_signature: 1,
            readdressed: 1,
            replay: 1,
            replay_window: 1,
            not_recipient: 1,
          };
          for (const [reason, n] of Object.entries(expected)) {
            await waitFor(
              `the agents' ${reason} reported`,
              async () =>
                await node.metric("plexus_sealed_agent_refused_total", {
                  reason,
                }) === n,
              10_000,
            );
          }
        },
      );
    } finally {
      for (const c of cleanup.reverse()) await c().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "sealed agents: a node other than the agent's forwards it; the gateway carries it across nodes and the agent opens each message once",
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.ok(!skip, skip);
    const dir = await Deno.makeTempDir({ prefix: "plexus-sealed-agents-" });
    const run = crypto.randomUUID().slice(0, 8);
    const prefix = `sealed-agents-x-${run}:`;
    const topic = `sealedx.${run}.keys`;
    const cleanup: (() => Promise<unknown>)[] = [];
    const gateway = {
      channels: {
        ...DEFAULT_CHANNELS,
        sealed: { subscribe: ["agent"], durable: true },
        "sealing-keys": { publish: ["agent"] },
      },
    };
    try {
      // Node b (no transport) has the gateway the forwarder hands to.
      const b = await startTestNode({ dir, name: "b", gateway });
      cleanup.push(() => b.shutdown());
      const key = await enrolledKey(b);
      // Node a publishes; its own forwarder listens on another topic, so
      // the forwarder below (on b's gateway) is the only one for `topic`.
      const policy: SealingPolicy = {
        topics: [{
          pattern: `sealedx.${run}.*`,
          recipients: [`agent:${key.id}`],
          deliver: { channel: "sealed", topics: [`sealedx.${run}.unused`] },
        }],
      };
      const a = await startTestNode({
        dir,
        name: "a",
        config: { transport: "redis-streams", sealed: policy },
        pluginConfig: { "redis-streams": { url, prefix } },
        gateway,
      });
      cleanup.push(() => a.shutdown());
      const { agent, opened, refused } = await connectSealedAgent(a, key);
      cleanup.push(() => agent.close());

      const kv = await Deno.openKv(`${dir}/shared.kv`);
      cleanup.push(() => Promise.resolve(kv.close()));
      const raw = await connectRedisStreams({ url, prefix });
      cleanup.push(() => raw.close());
      const metrics = createMetrics("plexus_");
      const forwarder = forwardSealedToAgents(raw, {
        ...policy,
        topics: [{
          ...policy.topics[0],
          deliver: { channel: "sealed", topics: [topic] },
        }],
      }, {
        opener: sealedOpener({ directory: kvSealingDirectory(kv) }),
        sink: () => b.gateway.api,
        metrics,
      });
      cleanup.push(() => forwarder.close());
      assert.equal(await forwarder.ready, true);

      const transport = a.handle.kernel.get<Transport>(
        "transport:redis-streams",
      );
      const N = 5;
      for (let i = 0; i < N; i++) {
        await transport.publish(
          topic,
          createEnvelope({
            type: "event",
            topic,
            source: "a",
            payload: { note: MARKER, i },
          }),
        );
      }
      await waitFor(
        "every message at the agent",
        () => opened.length >= N,
        20_000,
      );
      assert.deepEqual(
        opened.map((m) => (m.payload as { i: number }).i).sort(),
        [0, 1, 2, 3, 4],
      );
      assert.ok(opened.every((m) => m.from === "node:a"));
      assert.deepEqual(refused, []);
      // Counted once the gateway's send returned (the agent may be first).
      await waitFor("the forwarder's count", () =>
        new RegExp(
          `plexus_sealed_forwarded_total\\{outcome="forwarded"\\} ${N}\n`,
        ).test(metrics.render()), 10_000);
      // Nobody on the way opened it.
      for (const n of [a, b]) {
        assert.equal(
          await n.metric("plexus_sealed_messages_total", { op: "opened" }),
          0,
        );
      }
    } finally {
      for (const c of cleanup.reverse()) await c().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
