/**
 * The RabbitMQ transport as the conformance suite makes it, from `AMQP_URL`;
 * also imported by the consumer child process. Test groups' queues expire
 * on their own after 10 minutes without a consumer; short retry backoff.
 *
 * @module
 */
import type { Transport } from "../../core/transport.ts";
import { connectRabbitmq } from "../../transports/rabbitmq/transport.ts";

/** Connects with the test timings. */
export default function connect(): Promise<Transport> {
  return connectRabbitmq({
    url: Deno.env.get("AMQP_URL"),
    retryBaseMs: 50,
    groupExpiresMs: 600_000,
  });
}
