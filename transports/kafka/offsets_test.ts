/**
 * `offsetsOf`: the offsets of a topic whose partition leaders Kafka has not
 * elected yet are asked again, not reported as a failure (a dead-letter
 * topic made by the first `term` was read too soon in CI: "This server is
 * not the leader for that topic-partition").
 */
import assert from "node:assert/strict";
import { offsetsOf } from "./transport.ts";

/** A KafkaJS-like protocol error: `retriable` as Kafka's error table says. */
function kafkaError(message: string, retriable: boolean): Error {
  return Object.assign(new Error(message), { retriable });
}

Deno.test("kafka offsetsOf: a retriable error (no leader yet) is asked again until the offsets come; another error fails at once", async () => {
  const waits: number[] = [];
  const pause = (ms: number) => (waits.push(ms), Promise.resolve());
  let calls = 0;
  const admin = {
    fetchTopicOffsets: () => {
      if (++calls <= 2) {
        return Promise.reject(kafkaError(
          "This server is not the leader for that topic-partition",
          true,
        ));
      }
      return Promise.resolve([
        { partition: 0, offset: "3", high: "3", low: "0" },
      ]);
    },
  };
  const got = await offsetsOf(admin, "t", pause);
  assert.deepEqual(got.map((p) => p.high), ["3"]);
  assert.equal(calls, 3);
  assert.deepEqual(waits, [100, 200]);

  calls = 0;
  const refusing = {
    fetchTopicOffsets:
      () => (calls++,
        Promise.reject(kafkaError("Topic authorization failed", false))),
  };
  await assert.rejects(offsetsOf(refusing, "t", pause), /authorization/);
  assert.equal(calls, 1);

  calls = 0;
  const never = {
    fetchTopicOffsets:
      () => (calls++, Promise.reject(kafkaError("Leader not available", true))),
  };
  await assert.rejects(offsetsOf(never, "t", pause), /Leader not available/);
  assert.equal(calls, 20, "gives up after a few seconds of tries");
});
