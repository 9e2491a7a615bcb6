/**
 * How many channels one agent connection may be subscribed to: the
 * presence record lists them in one KV value.
 */
import assert from "node:assert/strict";
import { gatewayPresenceKey } from "../../core/state/keys.ts";
import type { PresenceRecord } from "../../gateway/presence.ts";
import { MAX_SUBSCRIBED_CHARS } from "../../gateway/connection/dispatch.ts";
import { connect, json, newAgentKey } from "./_raw_client.ts";
import { startTestNode } from "./_node.ts";

/** A channel name under `policies` of 8 segments, 463 characters. */
const longName = (i: number) =>
  [
    "policies",
    ...Array.from({ length: 7 }, (_, k) => `${i}-${k}-`.padEnd(64, "x")),
  ]
    .join(".");

Deno.test("gateway subscriptions: past 32,768 characters of channel names a sub gets err bad_request, the socket stays open and presence keeps the list", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-subs-" });
  const n = await startTestNode({ dir });
  try {
    const a = await newAgentKey();
    await n.enrol(a, ["agent"]);
    const s = await connect(n.ws, a);
    const fit = Math.floor(MAX_SUBSCRIBED_CHARS / longName(0).length);
    const codes: string[] = [];
    // 150 names are ~70 KB: before, the presence write past 64 KiB threw
    // and the connection failed.
    for (let i = 0; i < 150; i++) {
      const r = await s.sub(longName(i));
      codes.push(
        r.header.type === "ok" ? "ok" : (json(r) as { code: string }).code,
      );
    }
    assert.deepEqual(codes, [
      ...Array(fit).fill("ok"),
      ...Array(150 - fit).fill("bad_request"),
    ]);
    const kv: Deno.Kv = n.handle.kernel.get("state:kv");
    const p = await kv.get<PresenceRecord>(gatewayPresenceKey(a.id));
    assert.equal(p.value!.channels.length, fit);
    // Room again after an unsub, on the same connection.
    const { header } = s.send({
      type: "unsub",
      ch: `backend.${a.id}.${longName(0)}`,
    });
    assert.equal((await s.reply(header.id)).header.type, "ok");
    assert.equal((await s.sub(longName(149))).header.type, "ok");
    s.close();
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
