import assert from "node:assert/strict";
import connect from "./_nats_connect.ts";
import connectCore from "./_nats_core_connect.ts";
import { restartService } from "./_services.ts";
import { CASES, conformance } from "../../testing/conformance.ts";

const url = Deno.env.get("NATS_URL");
if (!url && Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1") {
  Deno.test("conformance nats: NATS_URL is set", () => {
    throw new Error(
      'NATS_URL required (PLEXUS_REQUIRE_SERVICES=1) but not set (run: eval "$(deno task services)")',
    );
  });
}
const ignore = url
  ? undefined
  : 'NATS_URL is not set (run: eval "$(deno task services)")';

conformance("nats", connect, {
  ignore,
  sanitize: false,
  connectModule: new URL("./_nats_connect.ts", import.meta.url).href,
  restartBroker: () => restartService("nats"),
});

conformance("nats core", connectCore, { ignore, sanitize: false });

Deno.test({
  name:
    "conformance: a NATS transport that acks before its handler runs fails the SIGKILL case",
  ignore: !url,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const broken = new URL("./_nats_autoack_connect.ts", import.meta.url);
    const { default: connectBroken } = await import(broken.href);
    const c = CASES.find((c) => c.name.includes("SIGKILLed"))!;
    await assert.rejects(
      () => c.run(connectBroken, 1000, { connectModule: broken.href }),
      /Timed out .* killed consumer's message/,
    );
  },
});
