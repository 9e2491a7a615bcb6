/**
 * What checking an envelope costs: `createEnvelope` and the Redis wire's
 * `decodeFields` (1 KiB payload) through `parseEnvelope` (the hand check,
 * core/envelope.ts) against the zod schema alone, in µs per call.
 *
 *   deno run bench/_envelope_cost.ts
 *
 * @module
 */
import { envelopeSchema, parseEnvelope } from "../core/envelope.ts";
import {
  decodeFields,
  encodeFields,
} from "../transports/redis-streams/wire.ts";

const N = 200_000;
const fields = encodeFields(
  parseEnvelope({
    id: "m-1",
    type: "event",
    topic: "bench.t",
    source: "node-a",
    timestamp: Date.now(),
    payload: { data: "x".repeat(1024) },
  }),
);
const input = () => ({
  id: crypto.randomUUID(),
  timestamp: Date.now(),
  type: "event" as const,
  topic: "bench.t",
  source: "node-a",
  payload: 1,
});
const time = (f: () => unknown) => {
  const t0 = performance.now();
  for (let i = 0; i < N; i++) f();
  return ((performance.now() - t0) * 1000 / N).toFixed(2);
};
for (let round = 0; round < 4; round++) {
  const hand = time(() => parseEnvelope(input()));
  const schema = time(() => envelopeSchema.parse(input()));
  const decode = time(() => decodeFields(fields, "1-0", "bench.t"));
  // Round 0 warms up.
  if (round > 0) {
    console.log(
      `create: parseEnvelope ${hand} µs, schema ${schema} µs; ` +
        `decodeFields (parseEnvelope inside) ${decode} µs`,
    );
  }
}
