import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import { createEnvelope } from "../../core/envelope.ts";
import { waitFor } from "../../testing/conformance.ts";
import { TransportError } from "../../core/transport.ts";
import { connectNats, type StartFrom } from "./transport.ts";
import { consumerOf, partitionOf, streamOf } from "./wire.ts";

const url = Deno.env.get("NATS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !url
  ? 'NATS_URL is not set (run: eval "$(deno task services)")'
  : undefined;
if (skip && !required) console.log(`ignored: nats consumers: ${skip}`);

const opts = {
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};

Deno.test({
  ...opts,
  name:
    "nats: a group's consumer deleted on the server under a live subscription is made again and delivery goes on",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectNats({ servers: url, partitions: 2 });
    try {
      const topic = `consumers.t${crypto.randomUUID().slice(0, 8)}`;
      const got: string[] = [];
      await t.subscribe(topic, async (d) => {
        got.push(d.envelope.id);
        await d.ack();
      }, { group: "g" });
      const e = (n: number) =>
        createEnvelope({ type: "event", topic, source: "t", payload: n });
      const first = e(1);
      await t.publish(topic, first);
      await waitFor("the first message", () => got.length === 1, 5000);
      const jsm = await jetstreamManager(t.nc);
      const stream = streamOf("plexus.", topic);
      await jsm.consumers.delete(stream, `${consumerOf("g", topic)}_m`);
      // Published after the loss: the consumer made again starts at the end.
      await waitFor("the consumer to be made again", async () => {
        const info = await jsm.consumers.info(
          stream,
          `${consumerOf("g", topic)}_m`,
        ).catch(() => undefined);
        return info !== undefined;
      }, 5000);
      const second = e(2);
      await t.publish(topic, second);
      await waitFor("the second message", () => got.length === 2, 5000);
      assert.deepEqual(got, [first.id, second.id]);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "nats: a subscription without a group removes its consumers on close; a group's stay",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectNats({ servers: url, partitions: 2 });
    try {
      const topic = `consumers.c${crypto.randomUUID().slice(0, 8)}`;
      const jsm = await jetstreamManager(t.nc);
      const stream = streamOf("plexus.", topic);
      const names = async () => {
        const out: string[] = [];
        for await (const c of jsm.consumers.list(stream)) out.push(c.name);
        return out.filter((n) =>
          n.startsWith("e_") || n.startsWith(consumerOf("g", topic))
        );
      };
      const solo = await t.subscribe(topic, (d) => d.ack());
      const group = await t.subscribe(topic, (d) => d.ack(), { group: "g" });
      assert.equal((await names()).length, 6, "1 + 2 partitions each");
      await solo.close();
      await group.close();
      assert.deepEqual(
        (await names()).sort(),
        ["_m", "_p0", "_p1"].map((s) => `${consumerOf("g", topic)}${s}`),
      );
      for (const n of await names()) await jsm.consumers.delete(stream, n);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "nats: startFrom replays a topic from a stream sequence or from a time; a time that is not one is refused",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectNats({ servers: url, partitions: 2 });
    const readers: { close(): Promise<void> }[] = [];
    try {
      const topic = `consumers.r${crypto.randomUUID().slice(0, 8)}`;
      const e = (n: number) =>
        createEnvelope({ type: "event", topic, source: "t", payload: n });
      const sent = [e(1), e(2), e(3)];
      await t.publish(topic, sent[0]);
      // The next millisecond: message 1 was stored before it, 2 and 3 after.
      const at = Date.now() + 1;
      while (Date.now() < at) await new Promise((r) => setTimeout(r, 1));
      await t.publish(topic, sent[1], { key: "k" });
      await t.publish(topic, sent[2]);
      const jsm = await jetstreamManager(t.nc);
      const stream = streamOf("plexus.", topic);
      const second = await jsm.streams.getMessage(stream, {
        last_by_subj: `plexus.${topic}.~${partitionOf("k", 2)}`,
      });
      const replay = async (startFrom: StartFrom, group?: string) => {
        const r = await connectNats({ servers: url, partitions: 2, startFrom });
        readers.push(r);
        const got: string[] = [];
        await r.subscribe(topic, async (d) => {
          got.push(d.envelope.id);
          await d.ack();
        }, { group });
        await waitFor(
          `2 replayed messages from ${JSON.stringify(startFrom)}`,
          () => got.length >= 2,
          5000,
        );
        return got.sort();
      };
      const want = [sent[1].id, sent[2].id].sort();
      assert.deepEqual(await replay({ sequence: second!.seq }), want);
      assert.deepEqual(await replay({ time: at }, "late"), want);
      assert.deepEqual(
        await replay({ time: new Date(at).toISOString() }),
        want,
      );
      const bad = await connectNats({
        servers: url,
        startFrom: { time: "yesterday" },
      });
      readers.push(bad);
      await assert.rejects(
        () => bad.subscribe(topic, (d) => d.ack()),
        (err) =>
          err instanceof TransportError && err.code === "invalid_argument" &&
          /startFrom\.time 'yesterday'/.test(err.message),
      );
    } finally {
      await Promise.all(readers.map((r) => r.close()));
      await t.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "nats: a stream deleted on the server is made again by the next publish",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectNats({ servers: url });
    try {
      const topic = `gone${crypto.randomUUID().slice(0, 8)}.t`;
      const e = (n: number) =>
        createEnvelope({ type: "event", topic, source: "t", payload: n });
      await t.publish(topic, e(1));
      const jsm = await jetstreamManager(t.nc);
      const stream = streamOf("plexus.", topic);
      await jsm.streams.delete(stream);
      await t.publish(topic, e(2));
      const info = await jsm.streams.info(stream);
      assert.equal(info.state.messages, 1, "the new stream has the message");
      await jsm.streams.delete(stream);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "nats: the dead-letter stream deleted on the server is made again by the next dead letter",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectNats({ servers: url, partitions: 1 });
    try {
      const topic = `consumers.d${crypto.randomUUID().slice(0, 8)}`;
      await t.subscribe(topic, (d) => d.term("no"), { group: "g" });
      const jsm = await jetstreamManager(t.nc);
      await jsm.streams.delete("PLEXUS__DLQ");
      const e = createEnvelope({
        type: "event",
        topic,
        source: "t",
        payload: 1,
      });
      await t.publish(topic, e);
      const letters = await waitFor("the dead letter", async () => {
        const l = await t.deadLetters!(topic);
        return l.length > 0 && l;
      }, 5000);
      assert.equal(letters[0].envelope.id, e.id);
      assert.equal(letters[0].reason, "no");
    } finally {
      await t.close();
    }
  },
});
