/**
 * `transports/rabbitmq`: the Transport contract on RabbitMQ (AMQP 0-9-1):
 * topic exchanges, a durable queue per group, key partitions with a single
 * active consumer, publisher confirms, delayed retries through TTL queues and
 * a dead-letter exchange carrying the error history.
 *
 * The default export is the plugin (`builtin:transports/rabbitmq`,
 * `--transport rabbitmq`), which provides `transport:rabbitmq`. The exchange,
 * queue and header layout is in docs/wire-format.md.
 *
 * @example Usage
 * ```ts ignore
 * import { connectRabbitmq } from "./mod.ts";
 * const t = await connectRabbitmq({ url: Deno.env.get("AMQP_URL") });
 * await t.publish("orders", envelope, { key: "customer-7" });
 * await t.close();
 * ```
 *
 * @module
 */
export { default } from "./plugin.ts";
export { type RabbitmqConfig, rabbitmqConfig } from "./plugin.ts";
export {
  connectRabbitmq,
  loadRabbitmqDriver,
  type RabbitmqOptions,
  type RabbitmqTransport,
} from "./transport.ts";
export {
  bindingOf,
  checkTopic,
  decodeDeadLetter,
  delayBucket,
  dlqQueue,
  groupQueue,
  keyedExchange,
  keyedRoutingKey,
  partitionQueue,
} from "./wire.ts";
