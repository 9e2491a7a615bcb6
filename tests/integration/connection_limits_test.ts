/**
 * One client must not kill or deafen a node (issue 14, defect 1). A real
 * node runs under a low `ulimit -n`; a separate attacker process opens
 * thousands of idle, half-sent and trickling connections from several
 * loopback addresses. Throughout, a client with a token is served on its
 * keep-alive connection and new `/health` connections are answered; after
 * the attacker leaves, descriptors and memory return to their baseline.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  deadline,
  type PlexusProcess,
  poll,
  startPlexus,
  writeConfig,
} from "./_process.ts";

const ATTACKER = fileURLToPath(new URL("./_attacker.ts", import.meta.url));
const enc = new TextEncoder();
const dec = new TextDecoder();

// Read through a shell: Deno wants --allow-all to read /proc itself.
function sh(script: string): string {
  const out = new Deno.Command("bash", { args: ["-c", script] }).outputSync();
  return dec.decode(out.stdout).trim();
}
function fds(pid: number): number {
  return Number(sh(`ls /proc/${pid}/fd | wc -l`));
}
function rssBytes(pid: number): number {
  return Number(sh(`ps -o rss= -p ${pid}`)) * 1024;
}

/** A metric's value from the node's Prometheus text (0 when absent). */
async function metric(p: PlexusProcess, series: string): Promise<number> {
  const text = await (await p.fetch("/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/**
 * A well-behaved client on one keep-alive connection opened before the
 * attack: an authenticated GET every `everyMs`, each answer's status kept.
 */
async function goodClient(p: PlexusProcess, everyMs: number) {
  const port = Number(new URL(p.url).port);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const token = await p.token("viewer");
  const statuses: number[] = [];
  const failures: string[] = [];
  let stop = false;
  const buf = new Uint8Array(65_536);
  const once = async () => {
    await conn.write(enc.encode(
      `GET /api/v1/cluster HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`,
    ));
    let text = "";
    while (true) {
      const n = await conn.read(buf);
      if (n === null) throw new Error("the node closed the good connection");
      text += dec.decode(buf.subarray(0, n));
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) continue;
      const len = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? -1);
      if (len >= 0 && text.length >= end + 4 + len) break;
      if (len < 0 && text.endsWith("0\r\n\r\n")) break;
    }
    statuses.push(Number(text.slice(9, 12)));
  };
  await once();
  const loop = (async () => {
    while (!stop) {
      const t0 = performance.now();
      try {
        await deadline(once(), 5000, "an answer on the good connection");
      } catch (err) {
        failures.push(String(err));
        return;
      }
      await new Promise((r) =>
        setTimeout(r, Math.max(0, everyMs - (performance.now() - t0)))
      );
    }
  })();
  return {
    statuses,
    failures,
    async stop() {
      stop = true;
      await loop;
      conn.close();
    },
  };
}

/** New connections to /health every `everyMs`; each status (or error) kept. */
function healthProbe(p: PlexusProcess, everyMs: number) {
  const results: string[] = [];
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
      try {
        const res = await deadline(
          fetch(new URL("/health", p.url), { client }),
          5000,
          "/health on a new connection",
        );
        await res.body?.cancel();
        results.push(String(res.status));
      } catch (err) {
        results.push(
          `error: ${(err as Error).message} (${(err as Error).cause})`,
        );
      } finally {
        client.close();
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    results,
    async stop() {
      stop = true;
      await loop;
    },
  };
}

async function attack(port: number, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", ATTACKER, "--port", String(port), ...args],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.equal(out.code, 0, "the attacker process failed");
  const lines = dec.decode(out.stdout).trim().split("\n");
  return JSON.parse(lines.at(-1)!) as Record<string, {
    opened: number;
    failed: number;
    refused503: number;
    closedByServer: number;
    maxServerCloseMs: number;
  }>;
}

Deno.test("connection limits: a flood past the file limit makes the node back off, not exit; it serves on and accepts again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-it-fds-" });
  // Budgets off, so the flood really reaches the descriptor limit.
  const config = await writeConfig(dir, {
    http: {
      maxConnections: 100_000,
      maxConnectionsPerIp: 100_000,
      headTimeoutMs: 1500,
    },
    rateLimit: { enabled: false },
  });
  const p = await startPlexus({
    dir,
    fileLimit: 256,
    args: ["--config", config],
  });
  try {
    const port = Number(new URL(p.url).port);
    const pid = p.child.pid;
    const good = await goodClient(p, 100);
    const baseline = fds(pid);
    const flood = await attack(port, [
      "--ips",
      "127.0.0.1",
      "--idle",
      "600",
      "--hold",
      "3000",
    ]);
    assert.ok(flood.idle.opened >= 400, JSON.stringify(flood));
    assert.equal(p.exited, false, `the node exited:\n${p.stderr}`);
    // Accepts failed for lack of descriptors, and were counted and logged.
    assert.ok(
      await metric(p, 'plexus_http_accept_errors_total{reason="fds"}') > 0,
    );
    assert.ok(
      p.records.some((r) => r.msg.startsWith("out of file descriptors")),
    );
    // ... and the budget came down to what the descriptors allow.
    const learned = await metric(p, "plexus_http_connections_max");
    assert.ok(learned >= 64 && learned < 256, `budget ${learned}`);
    assert.ok(
      await metric(
        p,
        'plexus_http_connections_closed_total{reason="evicted"}',
      ) >
        0,
    );
    // New connections are accepted again once the attacker has gone.
    await poll(
      async () => {
        const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
        try {
          const res = await fetch(new URL("/health", p.url), { client });
          await res.body?.cancel();
          return res.status === 200;
        } catch {
          return false;
        } finally {
          client.close();
        }
      },
      "/health on a new connection after the flood",
      20_000,
      200,
    );
    await good.stop();
    assert.deepEqual(good.failures, []);
    assert.ok(good.statuses.length >= 10, `${good.statuses.length} answers`);
    assert.ok(good.statuses.every((s) => s === 200), String(good.statuses));
    await poll(
      () => fds(pid) <= baseline + 4,
      `descriptors back to ${baseline} (now ${fds(pid)})`,
      20_000,
      200,
    );
  } finally {
    await p.close();
  }
});

Deno.test("connection limits: idle, half-sent and trickling connections from many IPs are refused, shed and timed out; good clients are served throughout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-it-conns-" });
  // 8 attacking IPs x 24 > 128, one IP over 24: both budgets are hit.
  const config = await writeConfig(dir, {
    http: { headTimeoutMs: 2000, maxConnections: 128, maxConnectionsPerIp: 24 },
    rateLimit: { enabled: false },
  });
  const p = await startPlexus({
    dir,
    fileLimit: 1024,
    args: ["--config", config],
  });
  try {
    const port = Number(new URL(p.url).port);
    const pid = p.child.pid;
    assert.equal(await metric(p, "plexus_http_connections_max"), 128);
    const good = await goodClient(p, 100);
    // Warm up what serving allocates once, then take the baseline.
    for (let i = 0; i < 20; i++) {
      await (await p.fetch("/health")).body?.cancel();
    }
    const baseFds = fds(pid);
    const baseRss = rssBytes(pid);
    const probe = healthProbe(p, 250);
    const stats = await attack(port, [
      "--ips",
      // 127.0.0.2 opens four times as many as each of the others.
      "127.0.0.2,127.0.0.2,127.0.0.2,127.0.0.3,127.0.0.2,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9",
      "--idle",
      "1200",
      "--half",
      "600",
      "--trickle",
      "200",
      "--trickle-every",
      "400",
      "--hold",
      "7000",
    ]);
    await probe.stop();
    await good.stop();
    assert.equal(p.exited, false, `the node exited:\n${p.stderr}`);

    // The good client on its keep-alive connection: every answer a 200.
    assert.deepEqual(good.failures, []);
    assert.ok(good.statuses.length >= 40, `${good.statuses.length} answers`);
    assert.ok(good.statuses.every((s) => s === 200), String(good.statuses));
    // New connections from the good client's address were answered too.
    assert.ok(probe.results.length >= 15, String(probe.results));
    assert.ok(
      probe.results.every((r) => r === "200"),
      `health on new connections: ${probe.results}\n${
        p.lines.filter((l) => /warn|error/.test(l)).slice(0, 12).join("\n")
      }`,
    );

    // Each kind was cut: refused at the per-IP budget, or closed by the
    // head timeout (2 s) or by eviction, never kept for the whole hold.
    const total = (k: string) => stats[k].refused503 + stats[k].closedByServer;
    for (const kind of ["idle", "half", "trickle"]) {
      assert.equal(total(kind), stats[kind].opened, JSON.stringify(stats));
      assert.ok(
        stats[kind].maxServerCloseMs < 2000 + 1500,
        `${kind} kept ${stats[kind].maxServerCloseMs} ms`,
      );
    }
    assert.ok(stats.trickle.closedByServer > 0, JSON.stringify(stats));
    assert.ok(
      await metric(p, 'plexus_http_connections_refused_total{budget="ip"}') > 0,
    );
    assert.ok(
      await metric(
        p,
        'plexus_http_connections_closed_total{reason="head_timeout"}',
      ) > 0,
    );
    assert.ok(
      await metric(
        p,
        'plexus_http_connections_closed_total{reason="evicted"}',
      ) >
        0,
    );
    // Refusals are logged, not once per connection.
    const refusalLogs = p.records.filter((r) =>
      r.msg.startsWith("connection refused")
    ).length;
    assert.ok(refusalLogs >= 1 && refusalLogs <= 20, `${refusalLogs} lines`);

    // After the attacker leaves: connections, descriptors and memory return.
    await poll(
      async () => await metric(p, "plexus_http_connections") <= 1,
      "open connections back to the metrics fetch alone",
      20_000,
      200,
    );
    await poll(
      () => fds(pid) <= baseFds + 4,
      `descriptors back to ${baseFds} (now ${fds(pid)})`,
      20_000,
      200,
    );
    const rss = rssBytes(pid);
    assert.ok(
      rss < baseRss + 64 * 1024 * 1024,
      `RSS ${rss >> 20} MiB after, ${baseRss >> 20} MiB before`,
    );
  } finally {
    await p.close();
  }
});
