/**
 * What the console's plugin table shows about a sandboxed plugin that
 * crashes: `GET /api/v1/plugins` counts its Worker's restarts and crashes;
 * trusted plugins have neither field.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { startPlexus } from "../integration/_process.ts";
import { eventually } from "../cluster/_cluster.ts";

const CRASHY = fileURLToPath(
  new URL("./fixtures/crashy_plugin.ts", import.meta.url),
);

interface Listed {
  name: string;
  status: string;
  restarts?: number;
  crashes?: number;
}

Deno.test("console plugins: a sandboxed plugin's crash shows as a restart and a crash in /api/v1/plugins", async () => {
  const p = await startPlexus({ args: ["--plugin", CRASHY] });
  try {
    const list = async () =>
      await (await p.api("/api/v1/plugins")).json() as Listed[];
    const before = (await list()).find((x) => x.name === "crashy")!;
    assert.deepEqual([before.restarts, before.crashes], [0, 0]);
    const gateway = (await list()).find((x) => x.name === "gateway")!;
    assert.equal("restarts" in gateway, false, "trusted: no Worker to count");

    const res = await fetch(`${p.url}/plugins/crashy/crash`);
    assert.deepEqual(await res.json(), { crashing: true });
    const after = await eventually(
      async () => (await list()).find((x) => x.name === "crashy")!,
      (x) => x.restarts === 1 && x.status === "running",
      "the crashed Worker to be restarted",
      30_000,
    );
    assert.equal(after.crashes, 1);
  } finally {
    await p.close();
  }
});
