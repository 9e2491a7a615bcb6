/**
 * Trust between nodes over real HTTP and WebSockets: two nodes sharing one
 * KV file, each with its own key in its own data dir.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig } from "../../core/config.ts";
import { type NodeHandle, startNode } from "../../core/node.ts";
import { BUILTINS } from "../../builtins.ts";
import { nodeClient } from "../../core/http/node_client.ts";
import { signRequest } from "../../core/security/http_signatures/mod.ts";

async function node(
  dir: string,
  name: string,
  config: Record<string, unknown> = {},
): Promise<NodeHandle> {
  const file = join(dir, `${name}.json`);
  await Deno.writeTextFile(file, JSON.stringify(config));
  const parsed = loadConfig([
    "--port",
    "0",
    "--node-id",
    name,
    "--kv",
    join(dir, "shared.kv"),
    "--data-dir",
    join(dir, name),
    "--plugins-dir",
    join(dir, "none"),
    "--config",
    file,
    "--log-level",
    "error",
  ], { env: {} });
  if (parsed.help) throw new Error("unreachable");
  return await startNode(parsed.config, { sinks: [], builtins: BUILTINS });
}

Deno.test("trust: a token from one node works on another; node-to-node calls are signed and cannot be replayed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-trust-" });
  const a = await node(dir, "a");
  const b = await node(dir, "b");
  try {
    assert.notEqual(a.security.nodeKey.kid, b.security.nodeKey.kid);
    const token = await a.security.jwt.issue("ops", "operator");
    const res = await fetch(`${b.url}/api/v1/auth/whoami`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(
      [(await res.json()).sub, "operator"],
      ["ops", "operator"],
    );

    const call = nodeClient(a.security);
    const who = await call(`${b.url}/api/v1/auth/whoami`);
    assert.equal(who.status, 200);
    const body = await who.json();
    assert.deepEqual([body.sub, body.via, body.keyid], [
      "node:a",
      "signature",
      a.security.nodeKey.kid,
    ]);
    assert.equal(body.sageVerification.verified, true);
    // A node call may post work on its peer.
    const task = await call(`${b.url}/api/v1/tasks`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "echo", payload: 1 }),
    });
    assert.equal(task.status, 202);

    // The same signed request sent twice: the nonce is spent on the first.
    const signed = await signRequest(
      new Request(`${b.url}/api/v1/cluster`),
      { key: a.security.signingKey },
    );
    const first = await fetch(signed.clone());
    assert.equal(first.status, 200);
    await first.body?.cancel();
    const replay = await fetch(signed.clone());
    assert.equal(replay.status, 401);
    await replay.body?.cancel();
    // ...also on the other node, which shares the nonce store.
    const elsewhere = await fetch(
      new Request(`${a.url}/api/v1/cluster`, { headers: signed.headers }),
    );
    assert.equal(elsewhere.status, 401);
    await elsewhere.body?.cancel();

    // A key from outside the cluster is not trusted.
    const stranger = await crypto.subtle.generateKey(
      { name: "Ed25519" },
      false,
      ["sign", "verify"],
    ) as CryptoKeyPair;
    const foreign = await fetch(
      await signRequest(new Request(`${b.url}/api/v1/cluster`), {
        key: {
          keyid: a.security.nodeKey.kid,
          alg: "ed25519",
          key: stranger.privateKey,
        },
      }),
    );
    assert.equal(foreign.status, 401);
    await foreign.body?.cancel();
  } finally {
    await b.shutdown();
    await a.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Resolves with the close event, or the error event when the handshake is refused. */
function outcome(ws: WebSocket): Promise<{ code?: number; error?: true }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.close();
      reject(new Error("socket neither refused nor closed within 8 s"));
    }, 8000);
    ws.onerror = () => {
      clearTimeout(timer);
      resolve({ error: true });
    };
    ws.onclose = (e) => {
      clearTimeout(timer);
      resolve({ code: e.code });
    };
  });
}

Deno.test("trust: a log-stream session ends when its token expires; bad tokens are refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-trust-ws-" });
  const open = await node(dir, "open");
  const closed = await node(dir, "closed", { auth: { logStream: "token" } });
  try {
    const wsUrl = (n: NodeHandle, q = "") =>
      `${n.url.replace("http", "ws")}/ws${q}`;
    // Open mode without a token: served, and not ended by any timer.
    const anon = new WebSocket(wsUrl(open));
    await new Promise((r) => (anon.onopen = r));

    const short = await open.security.jwt.issue("viewer", "viewer", {
      ttl: 2000,
    });
    const started = Date.now();
    const ws = new WebSocket(wsUrl(open, `?access_token=${short}`));
    const ended = outcome(ws);
    await new Promise((r) => (ws.onopen = r));
    const end = await ended;
    const took = Date.now() - started;
    assert.equal(end.code, 4001);
    assert.ok(took >= 900 && took < 5000, `ended after ${took} ms`);
    assert.equal(anon.readyState, WebSocket.OPEN, "the anonymous client stays");
    anon.close();

    // A bad token is refused even where tokens are optional.
    const forged = new WebSocket(wsUrl(open, "?access_token=abc.def.ghi"));
    assert.deepEqual(await outcome(forged), { error: true });
    // Where tokens are required: none → refused; a viewer token → served.
    assert.deepEqual(await outcome(new WebSocket(wsUrl(closed))), {
      error: true,
    });
    const good = await closed.security.jwt.issue("v", "viewer", { ttl: "1h" });
    const ok = new WebSocket(wsUrl(closed, `?access_token=${good}`));
    await new Promise((r, j) => {
      ok.onopen = r;
      ok.onerror = j;
    });
    const okClosed = outcome(ok);
    ok.close();
    await okClosed;
    const refused = await fetch(`${closed.url}/ws`, {
      headers: { upgrade: "websocket" },
    });
    assert.equal(refused.status, 401);
    await refused.body?.cancel();
  } finally {
    await open.shutdown();
    await closed.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("trust: the per-IP limit runs before authentication, so a credential-stuffing flood is cut cheaply", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-trust-ip-" });
  const n = await node(dir, "ip", {
    rateLimit: { ip: { rate: 1, periodMs: 60_000, burst: 3 } },
  });
  try {
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${n.url}/api/v1/plugins`, {
        headers: { authorization: `Bearer not-a-token-${i}` },
      });
      statuses.push(res.status);
      if (res.status === 429) {
        assert.match(res.headers.get("ratelimit-policy")!, /^"ip";q=3;w=180$/);
        assert.ok(Number(res.headers.get("retry-after")) > 0);
      }
      await res.body?.cancel();
    }
    assert.deepEqual(statuses, [401, 401, 401, 429, 429]);
    // Probes stay open: /health is not behind the API limits.
    const health = await fetch(`${n.url}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
