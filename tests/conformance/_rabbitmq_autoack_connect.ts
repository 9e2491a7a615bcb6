/**
 * A deliberately broken RabbitMQ transport for the suite's own test: it
 * acks every message before its handler runs, so a consumer killed
 * mid-message loses it. The SIGKILL case must fail on it.
 *
 * @module
 */
import type { Transport } from "../../core/transport.ts";
import connectGood from "./_rabbitmq_connect.ts";

/** Connects the broken variant. */
export default async function connect(): Promise<Transport> {
  const t = await connectGood();
  return {
    name: t.name,
    caps: t.caps,
    publish: t.publish.bind(t),
    close: t.close.bind(t),
    subscribe: (topic, handler, opts) =>
      t.subscribe(topic, async (d) => {
        await d.ack();
        await handler(d);
      }, opts),
  };
}
