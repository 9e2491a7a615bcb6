/**
 * Requests/s of the authenticated route `GET /api/v1/auth/whoami` through a
 * whole node, with (a) a JWT bearer token and (b) an RFC 9421 Ed25519
 * signature, versus (c) the same route on the same node stack with
 * authentication replaced by a stub that accepts every request as the same
 * principal.
 *
 *   deno run -A bench/http_auth.ts [--quick] [--rounds N] [--duration MS]
 *     [--connections N] [--kv file|memory]
 *
 * Same method as bench/http_health.ts: each node (bench/_auth_server.ts)
 * runs in its own process pinned to core 0, the load generator
 * (bench/_load.ts, raw HTTP/1.1) in a fresh process pinned to core 1 for
 * every round; rounds rotate the three variants and the values are medians.
 * Signature nonces are single-use, so every signed request is signed ahead
 * of the rounds (by two signer processes, before any timing) and sent once.
 * KV is a file (`--kv memory`: in memory), as a node runs by default.
 *
 * After the rounds, with the nodes stopped, a process pinned to core 0
 * times the parts of authentication one by one (Ed25519 verify, KV nonce
 * commit, KV revocation lookup, ...). The last line on stdout is the JSON
 * result: the top-level value and ratio are the worse of the two methods;
 * `jwt` and `signature` hold each. Everything else goes to stderr.
 *
 * @module
 */
import {
  bottleneck,
  type Child,
  flag,
  info,
  isQuick,
  median,
  numFlag,
  round,
  spawnDeno,
  spread,
} from "./_util.ts";

interface LoadResult {
  requests: number;
  seconds: number;
  rps: number;
  failures: number;
  firstFailure: string;
  exhausted: boolean;
  clientCpu: number;
  serverCpu: number;
  otherCpu: number;
}

type Variant = "open" | "jwt" | "signature";

interface Server {
  label: Variant;
  child: Child;
  url: string;
  pid: number;
  token: string;
  results: LoadResult[];
}

const WHOAMI = "/api/v1/auth/whoami";

const quick = isQuick();
const rounds = numFlag("rounds", quick ? 3 : 5);
const durationMs = numFlag("duration", quick ? 1000 : 1500);
const warmupMs = quick ? 300 : 400;
const connections = numFlag("connections", 32);
const kvKind = flag("kv") ?? "file";
if (kvKind !== "file" && kvKind !== "memory") {
  throw new Error(`--kv: expected file or memory, got ${kvKind}`);
}
/** Signed requests per round: expected requests times this. */
const SIGN_MARGIN = 1.5;

const tmp = await Deno.makeTempDir({ prefix: "plexus-bench-auth-" });
const children: Child[] = [];
const pct = (x: number) => `${Math.round(x * 100)}%`;

async function startServer(
  label: Variant,
  mode: "auth" | "open",
  extra: string[],
): Promise<Server> {
  const dir = `${tmp}/${label}`;
  await Deno.mkdir(dir);
  const child = await spawnDeno(label, "_auth_server.ts", [
    mode,
    "--data-dir",
    dir,
    "--kv",
    kvKind === "file" ? `${dir}/kv.sqlite3` : ":memory:",
    ...extra,
  ], 0);
  children.push(child);
  const ready = await child.next<{ url: string; pid: number; token: string }>(
    30_000,
  );
  return { label, child, ...ready, results: [] };
}

/** Signs `counts[i]` requests for `url` into `${prefix}-i.jsonl`, on both cores. */
async function signAhead(
  url: string,
  prefix: string,
  counts: number[],
): Promise<string[]> {
  const t0 = performance.now();
  const files = counts.map((_, i) => `${prefix}-${i}.jsonl`);
  const signers = [0, 1].map(async (core) => {
    const out: string[] = [];
    for (let i = 0; i < counts.length; i++) {
      const part = `${prefix}-${i}.part${core}`;
      out.push(part);
      const signer = await spawnDeno(`signer${core}`, "_auth_server.ts", [
        "sign",
        "--key-file",
        `${tmp}/service-key.jwk`,
        "--url",
        url,
        "--count",
        String(Math.ceil(counts[i] / 2)),
        "--out",
        part,
      ], core);
      try {
        await signer.next(120_000);
      } finally {
        await signer.stop();
      }
    }
    return out;
  });
  const parts = await Promise.all(signers);
  for (let i = 0; i < counts.length; i++) {
    const text = (await Deno.readTextFile(parts[0][i])) +
      (await Deno.readTextFile(parts[1][i]));
    await Deno.writeTextFile(files[i], text);
  }
  const total = counts.reduce((a, b) => a + b, 0);
  info(
    `  signed ${total} requests in ${
      Math.round(performance.now() - t0)
    } ms (2 processes)`,
  );
  return files;
}

async function load(
  server: Server,
  ms: number,
  warm: number,
  requestsFile?: string,
): Promise<LoadResult> {
  const args = [
    "--url",
    server.url + WHOAMI,
    "--connections",
    String(connections),
    "--duration",
    String(ms),
    "--warmup",
    String(warm),
    "--server-pid",
    String(server.pid),
  ];
  if (server.label === "jwt") {
    args.push("--header", `Authorization: Bearer ${server.token}`);
  }
  if (requestsFile) args.push("--requests-file", requestsFile);
  const gen = await spawnDeno("load", "_load.ts", args, 1);
  let result: LoadResult;
  try {
    result = await gen.next<LoadResult>(ms + warm + 30_000);
  } finally {
    await gen.stop();
  }
  if (result.failures > 0) {
    throw new Error(
      `${server.label}: ${result.failures} failed requests (first: ${result.firstFailure})`,
    );
  }
  return result;
}

/**
 * Where authentication time goes: each part timed on its own in a process
 * pinned to core 0 (the nodes are stopped by then), on a fresh KV of the
 * same kind as the nodes'.
 */
async function profileParts(): Promise<
  Record<string, { cpuUs: number; wallUs: number }>
> {
  const child = await spawnDeno("profile", "_auth_server.ts", [
    "profile",
    "--kv",
    kvKind === "file" ? `${tmp}/profile.sqlite3` : ":memory:",
    "--ms",
    quick ? "80" : "120",
  ], 0);
  try {
    return (await child.next<
      { profile: Record<string, { cpuUs: number; wallUs: number }> }
    >(60_000)).profile;
  } finally {
    await child.stop();
  }
}

let exitCode = 0;
try {
  // The service key: its public half is enrolled on the auth node, the
  // private half signs the requests (in the signer processes).
  const pair = await crypto.subtle.generateKey(
    { name: "Ed25519" },
    true,
    ["sign", "verify"],
  ) as CryptoKeyPair;
  await Deno.writeTextFile(
    `${tmp}/service-key.jwk`,
    JSON.stringify(await crypto.subtle.exportKey("jwk", pair.privateKey)),
  );
  const publicKey = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  ).toBase64({ alphabet: "base64url", omitPadding: true });

  const auth = await startServer("jwt", "auth", ["--service-key", publicKey]);
  // Its own node for signatures, so the nonce writes (and whatever KV does
  // after them) are not counted in the JWT rounds.
  const sigServer = await startServer("signature", "auth", [
    "--service-key",
    publicKey,
  ]);
  const open = await startServer("open", "open", []);
  const target = sigServer.url + WHOAMI;

  // Each variant answers as it should, and only as it should.
  const get = async (url: string, headers: HeadersInit = {}) => {
    const res = await fetch(url, { headers });
    return { status: res.status, body: await res.text(), headers: res.headers };
  };
  const none = await get(target);
  if (none.status !== 401) {
    throw new Error(`auth node answered ${none.status} without credentials`);
  }
  const jwtCheck = await get(auth.url + WHOAMI, {
    authorization: `Bearer ${auth.token}`,
  });
  if (jwtCheck.status !== 200) {
    throw new Error(`JWT refused: ${jwtCheck.status} ${jwtCheck.body}`);
  }
  const [probeFile] = await signAhead(target, `${tmp}/probe`, [2]);
  const probe: [string, string][] = JSON.parse(
    (await Deno.readTextFile(probeFile)).split("\n")[0],
  );
  const sigCheck = await get(target, probe);
  if (sigCheck.status !== 200 || !sigCheck.body.includes("sageVerification")) {
    throw new Error(`signature refused: ${sigCheck.status} ${sigCheck.body}`);
  }
  const replay = await get(target, probe);
  if (replay.status !== 401) {
    throw new Error(`a replayed signature got ${replay.status}, not 401`);
  }
  const openCheck = await get(open.url + WHOAMI);
  if (openCheck.status !== 200 || !openCheck.body.includes('"via":"jwt"')) {
    throw new Error(
      `open node did not take the stub: ${openCheck.status} ${openCheck.body}`,
    );
  }
  const bodies = {
    open: openCheck.body.length,
    jwt: jwtCheck.body.length,
    signature: sigCheck.body.length,
  };
  info(
    `http_auth: GET ${WHOAMI}; bodies open ${bodies.open} / jwt ${bodies.jwt} / signature ${bodies.signature} bytes; ` +
      `KV ${kvKind}; ${rounds} rounds x ${durationMs} ms, ${connections} raw connections`,
  );

  // Warm-up (not counted); the signature warm-up also sizes the pools.
  const warmMs = quick ? 500 : 1000;
  for (const s of [open, auth]) await load(s, warmMs, warmupMs);
  const guess = quick ? 6000 : 10_000;
  const [warmFile] = await signAhead(target, `${tmp}/warm`, [guess]);
  const warm = await load(sigServer, warmMs, 200, warmFile);
  info(
    `  warm-up signature ${Math.round(warm.rps)} req/s${
      warm.exhausted ? " (pool used up)" : ""
    }`,
  );
  const perRound = Math.ceil(
    warm.rps * (durationMs + warmupMs) / 1000 * SIGN_MARGIN + 500,
  );
  const pools = await signAhead(
    target,
    `${tmp}/round`,
    Array(rounds).fill(perRound),
  );

  const variants = [open, auth, sigServer];
  for (let i = 0; i < rounds; i++) {
    const order = [...variants.slice(i % 3), ...variants.slice(0, i % 3)];
    for (const s of order) {
      const r = await load(
        s,
        durationMs,
        warmupMs,
        s === sigServer ? pools[i] : undefined,
      );
      s.results.push(r);
      info(
        `  round ${i + 1} ${s.label.padEnd(9)} ${
          String(Math.round(r.rps)).padStart(6)
        } req/s  server cpu ${pct(r.serverCpu)}, load-gen cpu ${
          pct(r.clientCpu)
        }, other processes ${r.otherCpu.toFixed(2)} cores${
          r.exhausted
            ? `, signed requests used up after ${r.seconds.toFixed(2)} s`
            : ""
        }`,
      );
    }
  }

  const summary = (s: Server) => {
    const rps = s.results.map((r) => r.rps);
    const serverUs = median(
      s.results.map((r) => r.serverCpu * r.seconds / r.requests * 1e6),
    );
    const clientUs = median(
      s.results.map((r) => r.clientCpu * r.seconds / r.requests * 1e6),
    );
    return {
      rps: median(rps),
      spread: spread(rps),
      serverCpu: median(s.results.map((r) => r.serverCpu)),
      clientCpu: median(s.results.map((r) => r.clientCpu)),
      otherCpu: median(s.results.map((r) => r.otherCpu)),
      serverUs,
      clientUs,
      bound: bottleneck(serverUs, clientUs),
    };
  };
  const o = summary(open);
  const j = summary(auth);
  const g = summary(sigServer);
  const notes: string[] = [];
  for (
    const [label, x] of [["open", o], ["jwt", j], ["signature", g]] as const
  ) {
    info(
      `${label}: ${Math.round(x.rps)} req/s (±${pct(x.spread)}); server ${
        pct(x.serverCpu)
      } of core 0 at ${x.serverUs.toFixed(1)} us/req, load generator ${
        pct(x.clientCpu)
      } at ${x.clientUs.toFixed(1)} us/req: ${x.bound}-bound`,
    );
    if (x.bound !== "server") {
      notes.push(
        `${label} is ${x.bound}-bound (load generator ${
          x.clientUs.toFixed(1)
        } us/req vs server ${
          x.serverUs.toFixed(1)
        }): its rate understates the server`,
      );
    }
    if (x.spread > 0.15) {
      notes.push(
        `${label} unstable: round-to-round spread ±${
          pct(x.spread)
        }; the server CPU per request is steadier`,
      );
    }
    if (x.otherCpu > 0.25) {
      notes.push(
        `other processes used ~${
          x.otherCpu.toFixed(2)
        } cores during the ${label} rounds; absolute rates are depressed`,
      );
    }
  }
  const exhaustedRounds = sigServer.results.filter((r) => r.exhausted).length;
  if (exhaustedRounds) {
    notes.push(
      `${exhaustedRounds} signature round(s) used up their ${perRound} signed requests early; those rounds measured a shorter window`,
    );
  }

  // The nodes idle meanwhile, but core 0 is the profile's alone.
  await Promise.all(children.splice(0).map((c) => c.stop()));
  info("http_auth: timing the parts of authentication ...");
  const parts = await profileParts();
  info(
    `  CPU us per call: ${
      Object.entries(parts).map(([k, v]) => `${k} ${v.cpuUs}`).join(", ")
    }`,
  );

  const jwtRatio = j.rps / o.rps;
  const sigRatio = g.rps / o.rps;
  const worse = sigRatio <= jwtRatio ? g : j;
  for (const [label, ratio] of [["jwt", jwtRatio], ["signature", sigRatio]]) {
    if ((ratio as number) < 0.5) {
      notes.push(
        `${label} ratio ${
          (ratio as number).toFixed(2)
        } is below the 0.5 target`,
      );
    }
  }
  console.log(JSON.stringify({
    bench: "http_auth",
    metric: "authenticated_requests_per_s",
    unit: "1/s",
    value: Math.round(worse.rps),
    baseline: {
      name: "same route unauthenticated",
      value: Math.round(o.rps),
    },
    ratio: round(Math.min(jwtRatio, sigRatio), 2),
    jwt: { value: Math.round(j.rps), ratio: round(jwtRatio, 2) },
    signature: { value: Math.round(g.rps), ratio: round(sigRatio, 2) },
    details: {
      route: `GET ${WHOAMI}`,
      kv: kvKind,
      rounds,
      durationMs,
      connections,
      bodyBytes: bodies,
      rps: {
        open: open.results.map((r) => Math.round(r.rps)),
        jwt: auth.results.map((r) => Math.round(r.rps)),
        signature: sigServer.results.map((r) => Math.round(r.rps)),
      },
      serverCpuUsPerReq: {
        open: round(o.serverUs, 1),
        jwt: round(j.serverUs, 1),
        signature: round(g.serverUs, 1),
      },
      // open/auth server CPU per request: the cost ratio, robust to load.
      serverCpuRatio: {
        jwt: round(o.serverUs / j.serverUs, 2),
        signature: round(o.serverUs / g.serverUs, 2),
      },
      loadGenCpuUsPerReq: {
        open: round(o.clientUs, 1),
        jwt: round(j.clientUs, 1),
        signature: round(g.clientUs, 1),
      },
      bound: { open: o.bound, jwt: j.bound, signature: g.bound },
      signedPerRound: perRound,
      // Each part alone, calls one after another, pinned (microseconds).
      profileUs: parts,
    },
    notes,
  }));
} catch (err) {
  info(`http_auth failed: ${(err as Error).stack ?? err}`);
  exitCode = 1;
} finally {
  await Promise.all(children.map((c) => c.stop()));
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
Deno.exit(exitCode);
