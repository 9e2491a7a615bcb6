/**
 * The `transports/kafka` plugin: provides `transport:kafka`, a
 * `KafkaTransport` (see `transport.ts`).
 *
 * Config (under `pluginConfig["kafka"]`): `brokers` (default
 * `KAFKA_BROKERS`, else `127.0.0.1:9092`), `prefix`, `maxMessageBytes`,
 * `maxBatchBytes`, `createTopics`, `partitions`, `replicationFactor`,
 * `startFrom`, `sessionTimeoutMs`, `heartbeatIntervalMs`,
 * `rebalanceTimeoutMs`, `fetchMaxWaitMs`, `retryBaseMs`, `retryMaxMs`,
 * `connectTimeoutMs`, `closeTimeoutMs`.
 *
 * @module
 */
import { z } from "zod";
import { type Plugin, transportPlugin } from "../../core/plugin.ts";
import { connectKafka } from "./transport.ts";

const ms = z.number().int().positive().max(3_600_000);

/** Schema of the plugin's config. */
export const kafkaConfig = z.strictObject({
  brokers: z.union([
    z.string().regex(
      /^[^\s,]+:\d+(,[^\s,]+:\d+)*$/,
      "expected host:port[,host:port...]",
    ),
    z.array(z.string().regex(/^[^\s,]+:\d+$/, "expected host:port")).min(1),
  ]).optional(),
  prefix: z.string().regex(
    /^[A-Za-z0-9._-]{0,100}$/,
    "expected up to 100 of A-Z a-z 0-9 . _ -",
  ).default("plexus."),
  maxMessageBytes: z.number().int().positive().max(512 * 1024 * 1024)
    .default(1_000_000),
  maxBatchBytes: z.number().int().positive().default(512 * 1024),
  createTopics: z.boolean().default(true),
  partitions: z.number().int().min(1).max(10_000).default(3),
  replicationFactor: z.number().int().min(1).max(100).default(1),
  startFrom: z.enum(["all", "new"]).default("all"),
  sessionTimeoutMs: ms.default(10_000),
  heartbeatIntervalMs: ms.default(1000),
  rebalanceTimeoutMs: ms.default(30_000),
  fetchMaxWaitMs: ms.default(500),
  retryBaseMs: ms.default(1000),
  retryMaxMs: ms.default(60_000),
  connectTimeoutMs: ms.default(5000),
  closeTimeoutMs: ms.default(30_000),
});

/** Config of the plugin after defaults. */
export type KafkaConfig = z.infer<typeof kafkaConfig>;

/** The kafka plugin (`builtin:transports/kafka`). */
const kafkaPlugin: Plugin<KafkaConfig> = transportPlugin({
  name: "kafka",
  config: kafkaConfig,
  permissions: { net: true, env: ["KAFKA_BROKERS"] },
  connect: (options, node) =>
    connectKafka({
      ...options,
      brokers: options.brokers ?? Deno.env.get("KAFKA_BROKERS") ??
        "127.0.0.1:9092",
      clientId: `${node.id}-${crypto.randomUUID().slice(0, 8)}`,
    }),
  probe: {
    name: "describeCluster",
    run: (transport) => transport.admin.describeCluster(),
  },
  logFields: (config) => ({ prefix: config.prefix }),
});

export default kafkaPlugin;
