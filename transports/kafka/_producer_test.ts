import assert from "node:assert/strict";
import { type ProducerLike, renewingProducer } from "./_producer.ts";

/**
 * One partition of a broker with Kafka's duplicate check: a batch whose
 * producer id and sequence it has appended already is answered with
 * success and not appended again.
 */
class Partition {
  log: string[] = [];
  #appended = new Set<string>();
  /** The next produce is appended, then the connection drops. */
  dropNextResponse = false;
  produce(producerId: number, sequence: number, messages: string[]) {
    const k = `${producerId}:${sequence}`;
    if (this.#appended.has(k)) return; // duplicate: success, not appended
    this.#appended.add(k);
    this.log.push(...messages);
    if (this.dropNextResponse) {
      this.dropNextResponse = false;
      throw new Error("Connection error: read ECONNRESET");
    }
  }
}

/** Like KafkaJS's idempotent producer: takes a failed batch's sequence back. */
function fakeProducer(
  p: Partition,
  producerId: number,
  events: string[],
): ProducerLike<string[]> {
  let sequence = 0;
  return {
    connect: () => {
      events.push(`connect ${producerId}`);
      return Promise.resolve();
    },
    disconnect: () => {
      events.push(`disconnect ${producerId}`);
      return Promise.resolve();
    },
    sendBatch(messages: string[]) {
      const first = sequence;
      sequence += messages.length;
      try {
        p.produce(producerId, first, messages);
        return Promise.resolve();
      } catch (err) {
        sequence -= messages.length;
        return Promise.reject(err);
      }
    },
  };
}

Deno.test("kafka producer: a send after one whose response was lost (but the broker appended it) is appended, not dropped as a duplicate", async () => {
  const p = new Partition();
  const events: string[] = [];
  let ids = 0;
  const producer = renewingProducer(() => fakeProducer(p, ++ids, events));
  await producer.connect();
  await producer.sendBatch(["a"]);
  p.dropNextResponse = true;
  await assert.rejects(producer.sendBatch(["b"]), /ECONNRESET/);
  await producer.sendBatch(["c"]);
  assert.deepEqual(p.log, ["a", "b", "c"]);
  assert.deepEqual(events, ["connect 1", "disconnect 1", "connect 2"]);
});

Deno.test("kafka producer: sends that succeed keep one producer", async () => {
  const p = new Partition();
  const events: string[] = [];
  let ids = 0;
  const producer = renewingProducer(() => fakeProducer(p, ++ids, events));
  await producer.connect();
  for (const m of ["a", "b", "c"]) await producer.sendBatch([m]);
  await producer.disconnect();
  assert.deepEqual(p.log, ["a", "b", "c"]);
  assert.deepEqual(events, ["connect 1", "disconnect 1"]);
});

Deno.test("kafka producer: a new producer that cannot connect fails the send and is replaced again on the next", async () => {
  const p = new Partition();
  const events: string[] = [];
  let ids = 0;
  const producer = renewingProducer(() => {
    const f = fakeProducer(p, ++ids, events);
    if (ids !== 2) return f;
    return { ...f, connect: () => Promise.reject(new Error("broker away")) };
  });
  await producer.connect();
  p.dropNextResponse = true;
  await assert.rejects(producer.sendBatch(["a"]), /ECONNRESET/);
  await assert.rejects(producer.sendBatch(["b"]), /broker away/);
  await producer.sendBatch(["c"]);
  assert.deepEqual(p.log, ["a", "c"]);
  assert.deepEqual(events, [
    "connect 1",
    "disconnect 1",
    "disconnect 2",
    "connect 3",
  ]);
});
