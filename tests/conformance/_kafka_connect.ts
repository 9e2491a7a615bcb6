/**
 * The Kafka transport as the conformance suite makes it, from
 * `KAFKA_BROKERS`; also imported by the consumer child process. The
 * broker's minimum session timeout (6 s) and fast heartbeats so a killed
 * member's partitions move within a test; short retry backoff.
 *
 * @module
 */
import type { Transport } from "../../core/transport.ts";
import { connectKafka } from "../../transports/kafka/transport.ts";

/** Connects with the test timings. */
export default function connect(): Promise<Transport> {
  return connectKafka({
    brokers: Deno.env.get("KAFKA_BROKERS"),
    sessionTimeoutMs: 6000,
    heartbeatIntervalMs: 300,
    rebalanceTimeoutMs: 10_000,
    fetchMaxWaitMs: 200,
    retryBaseMs: 50,
    closeTimeoutMs: 5000,
  });
}
