import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { FaultProxy } from "../../tests/gossip/_fault_proxy.ts";
import { freePort } from "../../tests/gossip/_ports.ts";
import { GossipDriver, type GossipDriverOptions } from "./driver.ts";

const SECRET = "driver-test-secret-0123456789";
const CONFIG = { probeIntervalMs: 100, probeTimeoutMs: 50 };

async function until(what: string, pred: () => boolean, ms = 15_000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function start(id: string, extra: Partial<GossipDriverOptions> = {}) {
  return GossipDriver.start({
    id,
    secret: SECRET,
    config: CONFIG,
    log: () => {},
    ...extra,
  });
}

const aliveIds = (d: GossipDriver) =>
  d.members().filter((m) => m.state === "alive").map((m) => m.id).sort();

Deno.test("gossip driver: members on UDP join through a seed and a leave reaches the others", async () => {
  const a = await start("a");
  const b = await start("b");
  const c = await start("c");
  try {
    b.join([a.addr]);
    c.join([a.addr]);
    await until(
      "3 members everywhere",
      () => [a, b, c].every((d) => aliveIds(d).length === 3),
    );
    assert.equal(a.transport, "udp");
    await until("datagrams arrive over UDP", () => a.stats.udpReceived > 0);
    assert.ok(a.stats.tcpReceived > 0, "push/pull arrived over TCP");
    const seenB = a.members().find((m) => m.id === "b")!;
    assert.ok(Date.now() - seenB.lastSeen < 10_000, "lastSeen is recent");
    await c.leave(2000);
    await until(
      "c left in a's view",
      () => a.members().find((m) => m.id === "c")?.state === "left",
    );
  } finally {
    await Promise.all([a.close(), b.close(), c.close()]);
  }
});

Deno.test("gossip driver: packets under another secret are dropped and counted, and nobody joins", async () => {
  const a = await start("a");
  let dropped = 0;
  const a2 = await start("a2", { onUnauthenticated: () => dropped++ });
  const intruder = await start("x", {
    secret: "not-the-cluster-secret-xyz",
    udpCheckMs: 0,
  });
  try {
    a2.join([a.addr]);
    intruder.join([a.addr, a2.addr]);
    await until(
      "a and a2 see each other",
      () => aliveIds(a).length === 2 && aliveIds(a2).length === 2,
    );
    await until(
      "intruder packets counted",
      () => a.stats.unauthenticated > 0 && a2.stats.unauthenticated > 0,
    );
    assert.equal(dropped, a2.stats.unauthenticated);
    assert.deepEqual(aliveIds(a), ["a", "a2"]);
    assert.deepEqual(aliveIds(intruder), ["x"]);
  } finally {
    await Promise.all([a.close(), a2.close(), intruder.close()]);
  }
});

Deno.test("gossip driver: transport tcp carries every packet over TCP", async () => {
  const a = await start("a", { transport: "tcp" });
  const b = await start("b", { transport: "tcp" });
  try {
    assert.equal(a.udpApi, null);
    b.join([a.addr]);
    await until(
      "both see 2",
      () => aliveIds(a).length === 2 && aliveIds(b).length === 2,
    );
    await new Promise((r) => setTimeout(r, 5 * CONFIG.probeIntervalMs));
    assert.deepEqual(aliveIds(a), ["a", "b"], "probes are answered over TCP");
    assert.equal(a.stats.udpSent + b.stats.udpSent, 0);
    assert.equal(a.stats.udpReceived + b.stats.udpReceived, 0);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

Deno.test("gossip driver: a member whose UDP is blocked says so, falls back to TCP and stays alive", async () => {
  const a = await start("a");
  const port = freePort();
  const proxy = await FaultProxy.start(port, { blockUdp: true });
  const logs: string[] = [];
  const b = await start("b", {
    port,
    advertise: proxy.addr,
    udpCheckMs: 1000,
    log: (_level, msg) => logs.push(msg),
  });
  try {
    b.join([a.addr]);
    await until("b falls back to TCP", () => b.transport === "tcp");
    assert.match(
      logs.join("\n"),
      /UDP looks blocked, so every packet now goes over TCP/,
    );
    await until(
      "both alive both ways",
      () => aliveIds(a).length === 2 && aliveIds(b).length === 2,
    );
    // Several suspicion timeouts later b is still alive in a's view.
    await new Promise((r) => setTimeout(r, 20 * CONFIG.probeIntervalMs));
    assert.equal(a.members().find((m) => m.id === "b")?.state, "alive");
    assert.ok(proxy.counts.dropped > 0, "the proxy did drop datagrams");
  } finally {
    await Promise.all([a.close(), b.close(), proxy.close()]);
  }
});

Deno.test("gossip driver: a member on Deno.listenDatagram (--unstable-net) and one on node:dgram understand each other", async () => {
  const a = await start("a");
  const script = fileURLToPath(
    new URL("../../tests/gossip/_swim_process.ts", import.meta.url),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-net",
      "--allow-net",
      "--allow-env=PLEXUS_MESH_SECRET",
      script,
      JSON.stringify({ id: "b", port: 0, seeds: [a.addr], config: CONFIG }),
    ],
    env: { PLEXUS_MESH_SECRET: SECRET },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let out = "";
  const reading = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) out += dec.decode(chunk);
  })();
  try {
    await until("b seen alive", () => aliveIds(a).includes("b"), 30_000);
    await until("b's ready line", () => out.includes('"ready"'));
    assert.match(out, /"udp":"Deno.listenDatagram"/);
    await until("datagrams from b", () => a.stats.udpReceived > 0);
    await new Promise((r) => setTimeout(r, 10 * CONFIG.probeIntervalMs));
    assert.equal(a.members().find((m) => m.id === "b")?.state, "alive");
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await reading;
    await a.close();
  }
});
