/**
 * `transports/nats`: the Transport contract on NATS JetStream (or plain
 * NATS, at most once, with `mode: "core"`).
 *
 * The default export is the plugin (`builtin:transports/nats`,
 * `--transport nats`), which provides `transport:nats`. The subject, stream
 * and header layout is in docs/wire-format.md.
 *
 * @example Usage
 * ```ts ignore
 * import { connectNats } from "./mod.ts";
 * const t = await connectNats({ servers: Deno.env.get("NATS_URL") });
 * await t.publish("orders", envelope, { key: "customer-7" });
 * await t.close();
 * ```
 *
 * @module
 */
export { default } from "./plugin.ts";
export { type NatsConfig, natsConfig } from "./plugin.ts";
export {
  connectNats,
  loadNatsDriver,
  type NatsOptions,
  type NatsTransport,
  type StartFrom,
} from "./transport.ts";
export {
  checkTopic,
  consumerOf,
  decodeBody,
  decodeDeadLetter,
  dlqSubject,
  encodeBody,
  partitionOf,
  partitionSubject,
  streamOf,
  subjectOf,
} from "./wire.ts";
