import assert from "node:assert/strict";
import { decodePacket, encodePacket, type GossipMessage } from "./codec.ts";
import type { GossipConfig } from "./config.ts";
import { type MembershipEvent, SwimNode } from "./node.ts";
import { mulberry32 } from "./_sim.ts";
import { TimerHeap } from "./_heap.ts";

/** A tiny hand-driven network: 2 ms links, crashes and one-way cuts. */
class Net {
  now = 0;
  nodes = new Map<string, SwimNode>();
  down = new Set<string>();
  cut = new Set<string>();
  events: (MembershipEvent & { at: number; by: string })[] = [];
  sent: { from: string; to: string; messages: GossipMessage[] }[] = [];
  #wire = new TimerHeap<{ from: string; to: string; data: Uint8Array }>();
  #seed = 1;

  add(
    id: string,
    options: {
      config?: Partial<GossipConfig>;
      members?: string[];
      /** Incarnations this node starts out believing, by member id. */
      believes?: Record<string, number>;
      incarnation?: number;
      addr?: string;
    } = {},
  ): SwimNode {
    const addr = options.addr ?? `${id}:7946`;
    const node = new SwimNode({
      id,
      addr,
      now: this.now,
      random: mulberry32(this.#seed++),
      config: options.config,
      incarnation: options.incarnation,
      members: options.members?.map((m) => ({
        id: m,
        addr: `${m}:7946`,
        incarnation: options.believes?.[m],
      })),
    });
    this.nodes.set(addr, node);
    this.down.delete(addr);
    this.#drain(node);
    return node;
  }

  crash(node: SwimNode): void {
    this.down.add(node.addr);
  }

  /** Drops everything between two members, both ways. */
  sever(a: SwimNode, b: SwimNode): void {
    this.cut.add(`${a.addr}>${b.addr}`);
    this.cut.add(`${b.addr}>${a.addr}`);
  }

  isolate(a: SwimNode): void {
    for (const b of this.nodes.values()) if (b !== a) this.sever(a, b);
  }

  /** Delivers a hand-made packet now. */
  inject(to: SwimNode, from: string, messages: GossipMessage[]): void {
    to.receive(from, encodePacket(messages), this.now);
    this.#drain(to);
  }

  run(until: number): void {
    while (true) {
      let next = this.#wire.peekAt();
      let who: SwimNode | undefined;
      for (const n of this.nodes.values()) {
        if (this.down.has(n.addr)) continue;
        const t = n.nextTickAt();
        if (t < next) [next, who] = [t, n];
      }
      if (next > until) break;
      this.now = next;
      if (who) {
        who.tick(next);
        this.#drain(who);
        continue;
      }
      const { value: p } = this.#wire.pop()!;
      const to = this.nodes.get(p.to);
      if (!to || this.down.has(p.to)) continue;
      to.receive(p.from, p.data, this.now);
      this.#drain(to);
    }
    this.now = until;
  }

  #drain(node: SwimNode): void {
    for (const e of node.drainEvents()) this.events.push({ ...e, by: node.id });
    for (const p of node.drainPackets()) {
      this.sent.push({
        from: node.id,
        to: p.to,
        messages: decodePacket(p.data),
      });
      if (this.cut.has(`${node.addr}>${p.to}`)) continue;
      this.#wire.push(this.now + 2, {
        from: node.addr,
        to: p.to,
        data: p.data,
      });
    }
  }

  about(id: string, type?: string) {
    return this.events.filter((e) => e.id === id && (!type || e.type === type));
  }
}

const ids = ["a", "b", "c", "d", "e"];
function cluster(
  net: Net,
  n: number,
  config?: Partial<GossipConfig>,
): SwimNode[] {
  const names = ids.slice(0, n);
  return names.map((id) => net.add(id, { config, members: names }));
}

Deno.test("swim: a member that stops answering is suspected, then declared failed by everyone", () => {
  const net = new Net();
  const [a, b, c, d] = cluster(net, 4, { gossipToTheDeadMs: 600_000 });
  net.run(3000);
  net.crash(d);
  net.run(60_000);
  for (const n of [a, b, c]) {
    assert.equal(n.member("d")?.state, "dead", `${n.id}'s view`);
  }
  assert.deepEqual(net.about("d", "failed").map((e) => e.by).sort(), [
    "a",
    "b",
    "c",
  ]);
  assert.ok(net.about("d", "suspect").length >= 1);
  assert.equal(
    net.events.filter((e) => e.id !== "d").length,
    0,
    "no one else was accused",
  );
});

Deno.test("swim: a suspected member refutes with a higher incarnation and is never declared dead", () => {
  const net = new Net();
  const [a, b] = cluster(net, 3);
  net.run(1500);
  net.inject(a, "c:7946", [{
    type: "suspect",
    incarnation: 0,
    node: "b",
    from: "c",
  }]);
  assert.equal(a.member("b")?.state, "suspect");
  net.run(20_000);
  assert.equal(b.incarnation, 1);
  assert.equal(a.member("b")?.state, "alive");
  assert.equal(a.member("b")?.incarnation, 1);
  assert.deepEqual(net.about("b", "failed"), []);
  assert.ok(b.stats.refutations >= 1);
});

Deno.test("swim: indirect probes keep a member alive when the direct path between two members is lost", () => {
  const net = new Net();
  const [a, b] = cluster(net, 4);
  net.sever(a, b);
  net.run(30_000);
  const sentIndirect = net.sent.filter((p) =>
    p.from === "a" && p.messages.some((m) => m.type === "indirect-ping")
  );
  assert.ok(sentIndirect.length > 0, "a did fall back to indirect probes of b");
  assert.equal(a.stats.probesFailed, 0);
  assert.equal(b.stats.probesFailed, 0);
  assert.deepEqual(net.events, [], "nobody was suspected");
});

Deno.test("swim: members joining through one seed all learn each other", () => {
  const net = new Net();
  const seed = net.add("a");
  const others = ["b", "c", "d", "e"].map((id) => net.add(id));
  others.forEach((n, i) => {
    net.run(i * 10);
    n.join([seed.addr], net.now);
  });
  net.run(5000);
  for (const n of [seed, ...others]) {
    assert.deepEqual(
      n.members().filter((m) => m.state === "alive").map((m) => m.id).sort(),
      ["a", "b", "c", "d", "e"],
      `${n.id}'s view`,
    );
  }
  assert.equal(net.events.filter((e) => e.type === "join").length, 5 * 4);
});

Deno.test("swim: a graceful leave is seen as left, not failed", () => {
  const net = new Net();
  const [a, b, c] = cluster(net, 3);
  net.run(2000);
  c.leave(net.now);
  net.run(3000);
  assert.ok(c.leaveComplete, "the leave notice was sent its full count");
  net.crash(c);
  net.run(30_000);
  assert.equal(a.member("c")?.state, "left");
  assert.equal(b.member("c")?.state, "left");
  assert.deepEqual(net.about("c", "left").map((e) => e.by).sort(), ["a", "b"]);
  assert.deepEqual(net.about("c", "failed"), []);
  assert.deepEqual(net.about("c", "suspect"), []);
});

Deno.test("swim: a restarted member with incarnation 0 refutes its old death and is alive again", () => {
  const net = new Net();
  const [a, b, , d] = cluster(net, 4, { gossipToTheDeadMs: 600_000 });
  net.run(1000);
  net.crash(d);
  net.run(40_000);
  assert.equal(a.member("d")?.state, "dead");
  const d2 = net.add("d");
  d2.join([a.addr], net.now);
  net.run(45_000);
  assert.ok(
    d2.incarnation >= 1,
    "it outbid the incarnation it was declared dead at",
  );
  for (const n of [a, b]) {
    assert.equal(n.member("d")?.state, "alive", `${n.id}'s view`);
  }
});

Deno.test("swim: a dead member's id is reclaimed by a new address only after deadNodeReclaimMs", () => {
  for (const reclaim of [0, 5000]) {
    const net = new Net();
    const config = { deadNodeReclaimMs: reclaim, gossipToTheDeadMs: 600_000 };
    const [a, , , d] = cluster(net, 4, config);
    net.run(1000);
    net.crash(d);
    net.run(60_000);
    assert.equal(a.member("d")?.state, "dead");
    const moved = net.add("d", { config, addr: "d-new:7946" });
    moved.join([a.addr], net.now);
    net.run(65_000);
    if (reclaim === 0) {
      assert.equal(a.member("d")?.addr, "d:7946", "never reclaimed when 0");
      assert.ok(a.stats.conflicts >= 1);
    } else {
      assert.equal(a.member("d")?.addr, "d-new:7946");
      assert.equal(a.member("d")?.state, "alive");
      assert.equal(net.about("d", "update").length, 3);
    }
  }
});

Deno.test("push/pull: anti-entropy repairs a view that no broadcast will fix", () => {
  for (const pushPullIntervalMs of [2000, 1e9]) {
    const net = new Net();
    const config = { pushPullIntervalMs };
    const a = net.add("a", { config, members: ["a", "b", "c"] });
    for (const id of ["b", "c", "d"]) {
      net.add(id, { config, members: ["a", "b", "c", "d"] });
    }
    net.run(15_000);
    if (pushPullIntervalMs === 2000) {
      assert.equal(a.member("d")?.state, "alive");
    } else {assert.equal(
        a.member("d"),
        undefined,
        "control: gossip alone never told a",
      );}
  }
});

Deno.test("lifeguard: a ping to a suspected member carries the suspicion (buddy system)", () => {
  for (const buddy of [true, false]) {
    const net = new Net();
    const [a, b, c] = cluster(net, 3, { buddy });
    // b hears but cannot answer, so the suspicion stands.
    net.cut.add(`${b.addr}>${a.addr}`).add(`${b.addr}>${c.addr}`);
    net.run(100);
    net.inject(a, "c:7946", [{
      type: "suspect",
      incarnation: 0,
      node: "b",
      from: "c",
    }]);
    net.sent = [];
    net.run(3000);
    const pings = net.sent.filter((p) =>
      p.from === "a" && p.to === "b:7946" && p.messages[0].type === "ping"
    );
    assert.ok(pings.length > 0);
    const carried = pings.some((p) =>
      p.messages.some((m) => m.type === "suspect" && m.node === "b")
    );
    assert.equal(carried, buddy);
  }
});

Deno.test("lifeguard: an isolated member raises its health score and probes less often", () => {
  const probes: number[] = [];
  for (const awareness of [true, false]) {
    const net = new Net();
    const [a] = cluster(net, 4, { awareness });
    net.isolate(a);
    net.run(30_000);
    probes.push(a.stats.probes);
    if (awareness) {
      assert.equal(a.healthScore, 7, "missed nacks pushed it to the cap");
    } else assert.equal(a.healthScore, 0);
  }
  assert.ok(
    probes[0] * 3 < probes[1],
    `probes with/without awareness: ${probes}`,
  );
});

Deno.test("lifeguard: probing a dead member costs no health when the helpers nack", () => {
  const net = new Net();
  const nodes = cluster(net, 5);
  net.crash(nodes[4]);
  net.run(6000);
  const failed = nodes.slice(0, 4).reduce(
    (s, n) => s + n.stats.probesFailed,
    0,
  );
  assert.ok(failed >= 1, "someone probed the dead member");
  for (const n of nodes.slice(0, 4)) {
    assert.equal(n.healthScore, 0, `${n.id}'s score`);
  }
});

Deno.test("lifeguard: a suspicion with independent confirmations expires sooner", () => {
  // 5 members: k = suspicionMult - 2 = 2 confirmations expected; a is cut
  // off, so only the injected accusations (and its own probes) count.
  const deadAt: number[] = [];
  for (const confirmations of [0, 2]) {
    const net = new Net();
    const [a, b] = cluster(net, 5);
    net.isolate(a);
    net.crash(b);
    for (const from of ["c", "d", "e"].slice(0, confirmations + 1)) {
      net.inject(a, `${from}:7946`, [{
        type: "suspect",
        incarnation: 0,
        node: "b",
        from,
      }]);
    }
    net.run(60_000);
    deadAt.push(net.about("b", "failed").find((e) => e.by === "a")!.at);
  }
  const min = 4 * Math.max(1, Math.log10(5)) * 1000;
  const max = 6 * min;
  // Unconfirmed, at most a's own failed probe confirms it once.
  const oneConfirmation = max - (Math.log(2) / Math.log(3)) * (max - min);
  assert.ok(
    deadAt[0] >= oneConfirmation - 1,
    `unconfirmed: dead at ${deadAt[0]}`,
  );
  assert.ok(
    Math.abs(deadAt[1] - min) < 2,
    `confirmed twice: dead at ${deadAt[1]}`,
  );
});

Deno.test("swim: a member that missed a refutation is corrected by whoever it gossips the stale suspicion to", () => {
  for (const answerStaleNotices of [true, false]) {
    const net = new Net();
    const config = { answerStaleNotices, gossipToTheDeadMs: 600_000 };
    const names = ["a", "b", "c"];
    const a = net.add("a", { config, members: names });
    const b = net.add("b", { config, members: names, incarnation: 1 });
    net.add("c", { config, members: names, believes: { b: 1 } });
    // b already refuted incarnation 0 (everyone but a knows) and cannot
    // reach a (a's probes get through via c), so only c can tell a.
    net.cut.add(`${b.addr}>${a.addr}`);
    net.inject(a, "x:7946", [{
      type: "suspect",
      incarnation: 0,
      node: "b",
      from: "x",
    }]);
    net.run(60_000);
    if (answerStaleNotices) {
      assert.equal(a.member("b")?.incarnation, 1);
      assert.deepEqual(net.about("b", "failed"), []);
    } else {
      assert.deepEqual(
        net.about("b", "failed").map((e) => e.by),
        ["a"],
        "control",
      );
    }
  }
});

Deno.test("swim: a malformed packet is counted and ignored", () => {
  const a = new SwimNode({ id: "a", addr: "a:1", now: 0, members: [] });
  a.receive("x:1", new Uint8Array([250, 1, 2]), 0);
  assert.equal(a.stats.malformed, 1);
  assert.deepEqual(a.drainPackets(), []);
});

Deno.test("swim: the same inputs give the same outputs", () => {
  const trace = () => {
    const net = new Net();
    const [, , c] = cluster(net, 4, { staggerStart: true });
    net.run(2000);
    net.crash(c);
    net.run(20_000);
    return JSON.stringify(net.events) + net.sent.length;
  };
  assert.equal(trace(), trace());
});

Deno.test("swim: suspicion(id) reports a suspicion's confirmations, the number expected and its deadline while the member is suspect", () => {
  const net = new Net();
  const [a, b] = cluster(net, 5);
  net.isolate(a);
  net.crash(b);
  assert.equal(a.suspicion("b"), undefined, "no suspicion before any");
  for (const from of ["c", "d"]) {
    net.inject(a, `${from}:7946`, [{
      type: "suspect",
      incarnation: 0,
      node: "b",
      from,
    }]);
  }
  assert.equal(a.member("b")?.state, "suspect");
  const s = a.suspicion("b")!;
  // c raised it, d confirmed it; 5 members expect 2 confirmations.
  assert.deepEqual(
    { confirmations: s.confirmations, expected: s.expected },
    { confirmations: 1, expected: 2 },
  );
  const max = 6 * 4 * Math.max(1, Math.log10(5)) * 1000;
  assert.ok(s.deadline > 0 && s.deadline < max, `deadline ${s.deadline}`);
  net.run(s.deadline + 1);
  assert.equal(a.member("b")?.state, "dead");
  assert.equal(a.suspicion("b"), undefined, "no suspicion once dead");
});
