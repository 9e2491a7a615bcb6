/**
 * `plexus login-link`: prints one URL whose token the node with that data
 * dir redeems once; bad flags exit 2 with one line naming the flag.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runMain } from "../integration/_process.ts";
import { loadNodeKey, NODE_KEY_FILE } from "../../core/security/node_key.ts";
import { createOperatorSessions } from "../../core/http/session.ts";

Deno.test("login-link: prints a one-time admin link for the node whose data dir it reads; bad flags exit 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-login-link-" });
  try {
    const perms = ["--allow-read", `--allow-write=${dir}`, "--allow-env"];
    const r = await runMain(dir, perms, [
      "login-link",
      "--data-dir",
      dir,
      "--url",
      "http://127.0.0.1:9999",
      "--ttl",
      "2m",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines.length, 1, "one line: the link");
    const link = new URL(lines[0]);
    assert.equal(link.origin, "http://127.0.0.1:9999");
    assert.equal(link.pathname, "/ui/auth/link");
    const token = link.searchParams.get("token")!;
    // The node with that data dir (its key) redeems it once, as an admin.
    using kv = await Deno.openKv(":memory:");
    const sessions = createOperatorSessions(kv, {
      nodeKey: await loadNodeKey(join(dir, NODE_KEY_FILE)),
    });
    assert.equal((await sessions.redeemLink(token)).role, "admin");
    await assert.rejects(sessions.redeemLink(token));

    const bad = await runMain(dir, perms, [
      "login-link",
      "--data-dir",
      dir,
      "--ttl",
      "2h",
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr.trim(), /^plexus: --ttl: .*1h/);
    const unknown = await runMain(dir, perms, ["login-link", "--nope"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /--nope/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
