/**
 * The routing facade as the conformance suite makes it over two real
 * transports: the group, ordering, SIGKILL and restart cases' topics go to
 * Redis Streams by rule, the rest to NATS JetStream by default. Also imported
 * by the consumer child process.
 *
 * @module
 */
import type { Transport } from "../../core/transport.ts";
import { routedTransport } from "../../core/transport_routing.ts";
import connectRedis from "./_redis_streams_connect.ts";
import connectNats from "./_nats_connect.ts";

/** Rules that split the suite's topics (`conformance.CASE.ID`) over both. */
export const RULES = [
  "group",
  "groups",
  "order",
  "sigkill",
  "restart",
].map((c) => ({
  pattern: `conformance.${c}.>`,
  transport: "redis",
  delivery: "at-least-once" as const,
}));

/** Connects both with the test timings. */
export default async function connect(): Promise<Transport> {
  return routedTransport({
    transports: { redis: await connectRedis(), nats: await connectNats() },
    rules: RULES,
    default: "nats",
    defaultDelivery: "at-least-once",
  });
}
