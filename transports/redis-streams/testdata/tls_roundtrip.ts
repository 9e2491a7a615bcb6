/**
 * For tls_test.ts: through the transport at the `rediss://` URL given,
 * publishes 20 messages and reads them back through a subscription; prints
 * `{"received":n,"reader":…}` (the reader's TLS as `respTlsOf` chose it:
 * `{}` is our RESP connection over TLS, `null` ioredis). Run with
 * `DENO_CERT` naming the server's CA.
 *
 * @module
 */
import { connectRedisStreams, respTlsOf } from "../transport.ts";
import { createEnvelope } from "../../../core/envelope.ts";

const url = Deno.args[0];
const t = await connectRedisStreams({ url, blockMs: 100, prefix: "tls:" });
const topic = `tls.t${crypto.randomUUID().slice(0, 8)}`;
let received = 0;
const all = Promise.withResolvers<void>();
const sub = await t.subscribe(topic, async (d) => {
  await d.ack();
  if (++received === 20) all.resolve();
}, { group: "g", maxInFlight: 10 });
for (let i = 0; i < 20; i++) {
  await t.publish(
    topic,
    createEnvelope({ type: "event", topic, source: "tls", payload: i }),
  );
}
const timer = setTimeout(() => all.resolve(), 10_000);
await all.promise;
clearTimeout(timer);
await sub.close();
await t.close();
console.log(JSON.stringify({
  received,
  reader: respTlsOf(t.redis.options.tls, t.redis.options.host) ?? null,
}));
