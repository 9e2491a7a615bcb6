/**
 * Server and signer processes for bench/http_auth.ts.
 *
 *   deno run -A bench/_auth_server.ts auth --data-dir DIR --kv SPEC --service-key B64URL
 *   deno run -A bench/_auth_server.ts open --data-dir DIR --kv SPEC
 *   deno run -A bench/_auth_server.ts sign --key-file JWK --url URL --count N --out FILE
 *   deno run -A bench/_auth_server.ts profile --kv SPEC [--ms 250]
 *
 * `auth` and `open` start a real node in-process (`startNode`, rate limits
 * off, log level warn, logs to stderr) and print
 * `{"ready":true,"url","pid","token"}` once listening, shutting down when
 * stdin closes. `auth` enrols the Ed25519 public key `--service-key` as
 * service key `bench` (sub `bench`, role `viewer`); `token` is a JWT for the
 * same subject and role (ttl 1 h). `open` is the same node with its
 * authenticator's `authenticate` replaced by one that accepts every request
 * as the principal that node's own `token` verifies to (so `whoami` answers
 * the same fields): every other part of the stack runs as usual.
 *
 * `sign` writes N lines, each the `[name, value]` headers of one freshly
 * signed `GET URL` (RFC 9421, Ed25519, default components, a new nonce
 * each), for bench/_load.ts `--requests-file`; then prints `{"signed":N}`.
 *
 * `profile` times each part of authentication on its own, in this process,
 * on a fresh KV at SPEC: CPU and wall microseconds per call, calls made one
 * after another, the median of 3 passes of `ms` each (interleaved, since
 * shared machines drift). Prints `{"profile":{part:{cpuUs,wallUs}}}`.
 *
 * @module
 */
import { loadConfig } from "../core/config.ts";
import { startNode } from "../core/node.ts";
import { BUILTINS } from "../builtins.ts";
import { safeStringify } from "../core/observe/logger.ts";
import { type Authenticator, createAuthenticator } from "../core/http/auth.ts";
import { createSecurity } from "../core/http/security.ts";
import { generateNodeKey } from "../core/security/node_key.ts";
import {
  kvNonceStore,
  signRequest,
} from "../core/security/http_signatures/mod.ts";
import { revokedJtiKey } from "../core/state/keys.ts";
import {
  cpuMs,
  flag,
  median,
  numFlag,
  reply,
  round,
  stdinClosed,
} from "./_util.ts";

// The service key's id, and the subject and role of key and token alike.
const BENCH_KEYID = "bench";
const BENCH_SUB = "bench";
const BENCH_ROLE = "viewer";
const WHOAMI_PATH = "/api/v1/auth/whoami";

const encoder = new TextEncoder();
const mode = Deno.args[0];

async function serve(open: boolean): Promise<void> {
  const dataDir = flag("data-dir") ?? await Deno.makeTempDir();
  const kv = flag("kv") ?? ":memory:";
  // Rate limits are their own concern (and would refuse a benchmark's load).
  const configFile = `${dataDir}/bench-config.json`;
  await Deno.writeTextFile(
    configFile,
    JSON.stringify({ rateLimit: { enabled: false } }),
  );
  const parsed = loadConfig([
    "--config",
    configFile,
    "--port",
    "0",
    "--kv",
    kv,
    "--data-dir",
    dataDir,
    "--log-level",
    "warn",
  ], { env: {} });
  if (parsed.help) throw new Error("unexpected --help");
  // stdout is the reply channel: logs go to stderr.
  const node = await startNode(parsed.config, {
    builtins: BUILTINS,
    sinks: [
      (r) => Deno.stderr.writeSync(encoder.encode(safeStringify(r) + "\n")),
    ],
  });
  const security = node.security;
  const token = await security.jwt.issue(BENCH_SUB, BENCH_ROLE, {
    ttl: "1h",
  });
  if (open) {
    const checked = await security.auth.authenticate(
      new Request(node.url + WHOAMI_PATH, {
        headers: { authorization: `Bearer ${token}` },
      }),
    );
    if (!checked.ok) {
      throw new Error(`own token refused: ${checked.failure.detail}`);
    }
    const { principal } = checked;
    const accept: Authenticator["authenticate"] = () =>
      Promise.resolve({ ok: true, principal: { ...principal } });
    // requireAuth holds this object: swapping its method removes exactly
    // the authentication work (the driver checks that it took effect).
    Object.assign(security.auth, { authenticate: accept });
  } else {
    const publicKey = flag("service-key");
    if (!publicKey) throw new Error("auth: --service-key is required");
    await security.keyring.enrol({
      alg: "ed25519",
      keyid: BENCH_KEYID,
      publicKey,
      sub: BENCH_SUB,
      role: BENCH_ROLE,
    }, BENCH_SUB);
  }
  reply({ ready: true, url: node.url, pid: Deno.pid, token });
  await stdinClosed();
  await node.shutdown("bench done");
}

async function sign(): Promise<void> {
  const jwk = JSON.parse(await Deno.readTextFile(flag("key-file")!));
  const url = flag("url")!;
  const count = numFlag("count", 0);
  const key = {
    keyid: BENCH_KEYID,
    alg: "ed25519" as const,
    key: await crypto.subtle.importKey("jwk", jwk, { name: "Ed25519" }, false, [
      "sign",
    ]),
  };
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const signed = await signRequest(new Request(url), { key, nonce: true });
    lines.push(JSON.stringify([
      ["Signature-Input", signed.headers.get("signature-input")],
      ["Signature", signed.headers.get("signature")],
    ]));
  }
  await Deno.writeTextFile(flag("out")!, lines.join("\n") + "\n");
  reply({ signed: count });
}

/** CPU and wall microseconds per call of `fn`, called one after another for about `ms`. */
async function timePerCall(
  fn: () => Promise<unknown>,
  ms: number,
): Promise<{ cpuUs: number; wallUs: number }> {
  let n = 0;
  const c0 = cpuMs("self");
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    for (let i = 0; i < 50; i++) await fn();
    n += 50;
  }
  const wall = performance.now() - t0;
  return {
    cpuUs: (cpuMs("self") - c0) / n * 1000,
    wallUs: wall / n * 1000,
  };
}

async function profile(): Promise<void> {
  const ms = numFlag("ms", 250);
  const kv = await Deno.openKv(flag("kv") ?? ":memory:");
  const nodeKey = await generateNodeKey();
  const security = createSecurity({
    kv,
    nodeKey,
    rateLimit: { enabled: false },
  });
  await security.keyring.publishNode(nodeKey, "bench-node");
  const pair = await crypto.subtle.generateKey(
    { name: "Ed25519" },
    true,
    ["sign", "verify"],
  ) as CryptoKeyPair;
  const raw = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  );
  await security.keyring.enrol({
    alg: "ed25519",
    keyid: BENCH_KEYID,
    publicKey: raw.toBase64({ alphabet: "base64url", omitPadding: true }),
    sub: BENCH_SUB,
    role: BENCH_ROLE,
  }, BENCH_SUB);
  const token = await security.jwt.issue(BENCH_SUB, BENCH_ROLE, { ttl: "1h" });
  const url = `http://127.0.0.1:8086${WHOAMI_PATH}`;
  const key = {
    keyid: BENCH_KEYID,
    alg: "ed25519" as const,
    key: pair.privateKey,
  };
  // Enough single-use signed requests for the two signature parts.
  const signed: Request[] = [];
  for (let i = 0; i < 2000 + ms * 60; i++) {
    signed.push(await signRequest(new Request(url), { key, nonce: true }));
  }
  let next = 0;
  const nextSigned = () => {
    if (next >= signed.length) {
      throw new Error("profile: out of signed requests");
    }
    return signed[next++];
  };
  // A signature base of the usual size.
  const base = new TextEncoder().encode(
    `"@method": GET\n"@authority": 127.0.0.1:8086\n"@path": ${WHOAMI_PATH}\n` +
      `"@query": ?\n"@signature-params": ("@method" "@authority" "@path" ` +
      `"@query");created=1700000000;keyid="bench";nonce="0123456789abcdefghijkl"`,
  );
  const sig = await crypto.subtle.sign("Ed25519", pair.privateKey, base);
  const nonces = kvNonceStore(kv);
  let n = 0;
  const bearer = new Request(url, {
    headers: { authorization: `Bearer ${token}` },
  });
  // The same authenticator with a nonce store that accepts without KV.
  const noKvNonce = createAuthenticator({
    jwt: security.jwt,
    keyring: security.keyring,
    nonceStore: () => Promise.resolve(true),
  });
  const parts: Record<string, () => Promise<unknown>> = {
    ed25519Verify: () =>
      crypto.subtle.verify("Ed25519", pair.publicKey, sig, base),
    kvRevocationGet: () => kv.get(revokedJtiKey(`missing-${n++}`)),
    // Random nonces, as signers send them (B-tree inserts land anywhere).
    kvNonceCommit: () =>
      nonces(
        BENCH_KEYID,
        crypto.getRandomValues(new Uint8Array(16)).toBase64({
          alphabet: "base64url",
          omitPadding: true,
        }),
        305,
      ),
    jwtVerify: () => security.jwt.verify(token),
    jwtAuthenticate: () => security.auth.authenticate(bearer),
    signatureAuthenticateNoKvNonce: async () => {
      const r = await noKvNonce.authenticate(nextSigned());
      if (!r.ok) throw new Error(`profile: ${r.failure.detail}`);
    },
    signatureAuthenticate: async () => {
      const r = await security.auth.authenticate(nextSigned());
      if (!r.ok) throw new Error(`profile: ${r.failure.detail}`);
    },
  };
  for (const fn of Object.values(parts)) {
    for (let i = 0; i < 300; i++) await fn();
  }
  const runs: Record<string, { cpuUs: number; wallUs: number }[]> = {};
  for (let pass = 0; pass < 3; pass++) {
    for (const [name, fn] of Object.entries(parts)) {
      (runs[name] ??= []).push(await timePerCall(fn, ms));
    }
  }
  kv.close();
  reply({
    profile: Object.fromEntries(
      Object.entries(runs).map(([name, r]) => [name, {
        cpuUs: round(median(r.map((x) => x.cpuUs)), 1),
        wallUs: round(median(r.map((x) => x.wallUs)), 1),
      }]),
    ),
  });
}

if (mode === "auth" || mode === "open") await serve(mode === "open");
else if (mode === "sign") await sign();
else if (mode === "profile") await profile();
else throw new Error(`unknown mode '${mode}' (auth | open | sign | profile)`);
