import assert from "node:assert/strict";
import connect from "./_redis_streams_connect.ts";
import { restartService } from "./_services.ts";
import { CASES, conformance } from "../../testing/conformance.ts";

const url = Deno.env.get("REDIS_URL");
if (!url && Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1") {
  Deno.test("conformance redis-streams: REDIS_URL is set", () => {
    throw new Error(
      'REDIS_URL required (PLEXUS_REQUIRE_SERVICES=1) but not set (run: eval "$(deno task services)")',
    );
  });
}

conformance("redis-streams", connect, {
  ignore: url
    ? undefined
    : 'REDIS_URL is not set (run: eval "$(deno task services)")',
  sanitize: false,
  connectModule: new URL("./_redis_streams_connect.ts", import.meta.url).href,
  restartBroker: () => restartService("redis"),
});

Deno.test({
  name:
    "conformance: a transport that acks before its handler runs fails the SIGKILL case",
  ignore: !url,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const broken = new URL("./_redis_autoack_connect.ts", import.meta.url);
    const { default: connectBroken } = await import(broken.href);
    const c = CASES.find((c) => c.name.includes("SIGKILLed"))!;
    await assert.rejects(
      () => c.run(connectBroken, 1000, { connectModule: broken.href }),
      /Timed out .* killed consumer's message/,
    );
  },
});
