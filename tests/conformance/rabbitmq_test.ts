import assert from "node:assert/strict";
import connect from "./_rabbitmq_connect.ts";
import { restartService } from "./_services.ts";
import { CASES, conformance } from "../../testing/conformance.ts";

const url = Deno.env.get("AMQP_URL");
if (!url && Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1") {
  Deno.test("conformance rabbitmq: AMQP_URL is set", () => {
    throw new Error(
      'AMQP_URL required (PLEXUS_REQUIRE_SERVICES=1) but not set (run: eval "$(deno task services)")',
    );
  });
}
const ignore = url
  ? undefined
  : 'AMQP_URL is not set (run: eval "$(deno task services)")';

conformance("rabbitmq", connect, {
  ignore,
  sanitize: false,
  connectModule: new URL("./_rabbitmq_connect.ts", import.meta.url).href,
  restartBroker: () => restartService("rabbitmq", { timeoutMs: 150_000 }),
});

Deno.test({
  name:
    "conformance: a RabbitMQ transport that acks before its handler runs fails the SIGKILL case",
  ignore: !url,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const broken = new URL("./_rabbitmq_autoack_connect.ts", import.meta.url);
    const { default: connectBroken } = await import(broken.href);
    const c = CASES.find((c) => c.name.includes("SIGKILLed"))!;
    await assert.rejects(
      () => c.run(connectBroken, 1000, { connectModule: broken.href }),
      /Timed out .* killed consumer's message/,
    );
  },
});
