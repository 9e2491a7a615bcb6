import assert from "node:assert/strict";
import { RaftDriver } from "./driver.ts";
import type { RaftLinks } from "./links.ts";
import {
  createMembership,
  type Membership,
  parseMemberAdd,
} from "./members.ts";
import { MemoryStorage } from "./storage.ts";

/** In-memory nodes: links that always connect every running node. */
class World {
  drivers = new Map<string, RaftDriver>();
  members = new Map<string, Membership>();
  remembered: string[] = [];
  removed: string[] = [];
  dialed = new Set<string>();

  add(id: string, voters: string[]): RaftDriver {
    const d = new RaftDriver({
      id,
      voters,
      storage: new MemoryStorage(),
      send: (to, ms) => {
        const peer = this.drivers.get(to);
        if (peer) queueMicrotask(() => peer.receive(ms));
      },
      tickMs: 5,
      electionTick: 10,
      heartbeatTick: 2,
    });
    this.drivers.set(id, d);
    this.members.set(
      id,
      createMembership({
        id,
        driver: () => d,
        links: this.links(id),
        timeoutMs: 1000,
        rememberPeer: (url) => this.remembered.push(`${id}:${url}`),
        onRemoved: () => this.removed.push(id),
      }),
    );
    d.start();
    return d;
  }

  links(me: string): RaftLinks {
    return {
      send: () => true,
      control: (to, data) => {
        const m = this.members.get(to);
        if (!m) return false;
        queueMicrotask(() => m.onControl(me, data));
        return true;
      },
      dial: (url) => this.dialed.add(url),
      forget: (url) => this.dialed.delete(url),
      handleUpgrade: () => new Response(null, { status: 426 }),
      peers: () =>
        [...this.drivers.keys()].filter((id) => id !== me).map((id) => ({
          id,
          address: `http://${id}`,
          connected: true,
        })),
      close: () => {},
    };
  }

  async leader(): Promise<string> {
    for (let i = 0; i < 1000; i++) {
      for (const [id, d] of this.drivers) {
        if (d.isLeader() && d.status().commit > 0) return id;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error("no leader within 5 s");
  }

  stop() {
    for (const d of this.drivers.values()) d.stop();
  }
}

Deno.test("raft members: an add asked on a follower is forwarded to the leader and answers once the configuration is applied", async () => {
  const w = new World();
  try {
    for (const id of ["a", "b", "c"]) w.add(id, ["a", "b", "c"]);
    const joiner = w.add("d", []);
    const lead = await w.leader();
    const follower = ["a", "b", "c"].find((id) => id !== lead)!;
    const a = await w.members.get(follower)!.change({
      op: "add",
      id: "d",
      url: "http://d",
    });
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.deepEqual(a.body.voters, ["a", "b", "c", "d"]);
    assert.ok(w.dialed.has("http://d"));
    // The leader records the URL and tells the others.
    assert.ok(w.remembered.includes(`${lead}:http://d`));
    for (let i = 0; i < 400 && !joiner.node.promotable(); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(joiner.node.promotable(), true);
    const dup = await w.members.get(lead)!.change({
      op: "add",
      id: "d",
      url: "http://d",
    });
    assert.equal(dup.status, 409);
  } finally {
    w.stop();
  }
});

Deno.test("raft members: a removed follower is told it is out (again when it links later); unknown ids get 404 and an unreachable URL 502 and is no longer dialed", async () => {
  const w = new World();
  try {
    for (const id of ["a", "b", "c"]) w.add(id, ["a", "b", "c"]);
    const lead = await w.leader();
    const m = w.members.get(lead)!;
    assert.equal((await m.change({ op: "remove", id: "zz" })).status, 404);
    const far = await m.change({ op: "add", id: "e", url: "http://e" });
    assert.equal(far.status, 502);
    assert.match(String(JSON.stringify(far.body)), /proving id e/);
    assert.equal(w.dialed.has("http://e"), false);
    const victim = ["a", "b", "c"].find((id) => id !== lead)!;
    const r = await m.change({ op: "remove", id: victim });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal((r.body.voters as string[]).includes(victim), false);
    for (let i = 0; i < 200 && w.removed.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.deepEqual(w.removed, [victim]);
    // Had it been down, the leader tells it again when its link comes up;
    // a voter's link coming up tells nobody anything.
    w.removed.length = 0;
    const voter = ["a", "b", "c"].find((id) => id !== lead && id !== victim)!;
    m.onPeerLinked(voter);
    m.onPeerLinked(victim);
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(w.removed, [victim]);
  } finally {
    w.stop();
  }
});

Deno.test("raft members: a bad add body is refused naming the field and the value seen", () => {
  assert.throws(() => parseMemberAdd([]), /JSON object/);
  assert.throws(
    () => parseMemberAdd({ id: "a b", url: "http://x" }),
    /field 'id'.*"a b"/,
  );
  assert.throws(
    () => parseMemberAdd({ id: "n4", url: "ftp://x" }),
    /field 'url'.*"ftp:\/\/x"/,
  );
  assert.deepEqual(parseMemberAdd({ id: "n4", url: "http://h:1/x" }), {
    op: "add",
    id: "n4",
    url: "http://h:1",
  });
});
