/**
 * `transports/kafka`: the Transport contract on Apache Kafka (kafkajs).
 *
 * The default export is the plugin (`builtin:transports/kafka`,
 * `--transport kafka`), which provides `transport:kafka`. The record layout
 * (value, key, `plexus-*` headers, retry and DLQ topics) is in
 * docs/wire-format.md.
 *
 * @example Usage
 * ```ts ignore
 * import { connectKafka } from "./mod.ts";
 * const t = await connectKafka({ brokers: Deno.env.get("KAFKA_BROKERS") });
 * await t.publish("orders", envelope, { key: "customer-7" });
 * await t.close();
 * ```
 *
 * @module
 */
export { default } from "./plugin.ts";
export { type KafkaConfig, kafkaConfig } from "./plugin.ts";
export {
  connectKafka,
  type KafkaOptions,
  type KafkaTransport,
} from "./transport.ts";
export {
  checkGroup,
  checkTopic,
  decodeDeadLetter,
  decodeRecord,
  dlqTopic,
  encodeRecord,
  groupId,
  kafkaTopic,
  retryTopic,
} from "./wire.ts";
