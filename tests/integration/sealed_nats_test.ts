/**
 * Sealed payloads on NATS JetStream: what the stream stores (read with the
 * `nats` CLI, `stream get`, the DLQ stream too) holds no plaintext, and each
 * refusal is dead-lettered with its reason (tests/integration/_sealed.ts).
 */
import assert from "node:assert/strict";
import {
  cliPublish,
  NATS_CLI,
  natsCli,
} from "../../transports/nats/_test_util.ts";
import { connectNats } from "../../transports/nats/transport.ts";
import {
  dlqSubject,
  encodeBody,
  streamOf,
  streamPrefix,
  subjectOf,
} from "../../transports/nats/wire.ts";
import {
  refusesAndDeadLetters,
  type SealedBroker,
  storesNoPlaintext,
} from "./_sealed.ts";

const url = Deno.env.get("NATS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !url
  ? 'NATS_URL is not set (run: eval "$(deno task services)")'
  : !NATS_CLI
  ? "PLEXUS_NATS_CLI (the nats CLI, built by deno task services when Go is installed) is not set"
  : undefined;
if (skip) console.log(`ignored: sealed nats: ${skip}`);

/** `nats stream get STREAM (SEQ | --last-for SUBJECT) --json`: the stored body and headers. */
async function get(stream: string, which: string[]): Promise<string> {
  const out = JSON.parse(
    await natsCli(["stream", "get", stream, ...which, "--json"]),
  ) as { data: string; hdrs?: string };
  const bytes = Uint8Array.from(atob(out.data), (c) => c.charCodeAt(0));
  return `${atob(out.hdrs ?? "")}\n${new TextDecoder().decode(bytes)}\n`;
}

const broker: SealedBroker = {
  connect: () => connectNats({ servers: url }),
  async stored(topic, messages, dead) {
    // The topic's family has its own stream here: sequence 1..messages.
    let out = "";
    for (let seq = 1; seq <= messages; seq++) {
      out += await get(streamOf("plexus.", topic), [String(seq)]);
    }
    if (dead > 0) {
      const last = await get(`${streamPrefix("plexus.")}_DLQ`, [
        "--last-for",
        dlqSubject("plexus.", topic),
      ]);
      assert.ok(last.includes("sealed "), `the DLQ as read: ${last}`);
      out += last;
    }
    return out;
  },
  // JetStream drops a second publish of one Nats-Msg-Id (the envelope id)
  // within its duplicate window; `nats pub` without the header is not.
  replay: (topic, envelope) =>
    cliPublish(subjectOf("plexus.", topic), encodeBody(envelope)),
  timeoutMs: 15_000,
};

/** Each test's topics are one family, so one stream of its own: removed after. */
async function removeStream(family: string): Promise<void> {
  await natsCli(["stream", "rm", "-f", streamOf("plexus.", family)]);
}

// Without Go there is no CLI: ignored even under PLEXUS_REQUIRE_SERVICES.
const opts = {
  ignore: skip !== undefined && !(required && !url),
  sanitizeOps: false,
  sanitizeResources: false,
};

Deno.test({
  ...opts,
  name:
    "sealed nats: the subscriber gets the plaintext while `nats stream get` shows only ciphertext",
  async fn() {
    assert.ok(!skip, skip);
    await storesNoPlaintext(
      broker,
      `sealednats${crypto.randomUUID().slice(0, 8)}`,
    );
  },
});

Deno.test({
  ...opts,
  name:
    "sealed nats: a non-recipient, a tampered, re-addressed, replayed, late or plain message is dead-lettered with its reason, and the node keeps serving",
  async fn() {
    assert.ok(!skip, skip);
    const family = `sealednats${crypto.randomUUID().slice(0, 8)}`;
    try {
      await refusesAndDeadLetters(broker, family);
    } finally {
      await removeStream(family);
    }
  },
});
