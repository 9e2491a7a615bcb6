/**
 * Real processes: a node joins a running 3-node cluster through
 * `POST /api/v1/raft/members`, catches up and counts in the quorum; a dead
 * node and then the leader are removed; the API's permissions and errors.
 */
import assert from "node:assert/strict";
import { freePorts } from "../integration/_consensus_cluster.ts";
import { poll } from "../integration/_process.ts";
import { RaftCluster, type RaftStatusBody } from "./_raft_cluster.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/**
 * Starts a node with `join: true` and `--peers` of only `peers`; appends it
 * to `c.nodes`, or restarts node `again` on its port and data dir.
 */
async function spawnJoiner(
  c: RaftCluster,
  id: string,
  peers: string[],
  again?: number,
): Promise<number> {
  const i = again ?? await c.add(id);
  await c.spawn(i, { join: true, peers });
  return i;
}

async function json(
  res: Response,
): Promise<{ status: number; body: Record<string, unknown> }> {
  return { status: res.status, body: await res.json() };
}

const post = (c: RaftCluster, i: number, body: unknown) =>
  c.api(i, "/api/v1/raft/members", {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
  }).then(json);

const remove = (c: RaftCluster, i: number, id: string) =>
  c.api(i, `/api/v1/raft/members/${id}`, { method: "DELETE" }).then(json);

const put = (c: RaftCluster, i: number, key: string, value: string) =>
  c.api(i, `/api/v1/raft/kv/${key}`, {
    method: "PUT",
    body: JSON.stringify({ value }),
  }).then(json);

/** Retries a write until it is acknowledged (no leader for a moment is fine). */
async function putOk(c: RaftCluster, i: number, key: string, value: string) {
  return await poll(async () => {
    const r = await put(c, i, key, value).catch(() => undefined);
    return r?.status === 200 ? r : undefined;
  }, `write of ${key} on ${c.nodes[i].id}`);
}

/** Waits until one of `among` leads and the others follow it; returns its index. */
async function leaderAmong(c: RaftCluster, among: number[]): Promise<number> {
  // Wrapped: node index 0 is falsy and would keep poll() waiting.
  const found = await poll(
    async () => {
      const all = await Promise.all(among.map((i) => c.status(i)));
      const k = all.findIndex((s) => s?.role === "leader");
      if (k < 0) return undefined;
      const ok = all.every((s) =>
        s?.lead === all[k]!.id && s.term === all[k]!.term
      );
      return ok ? { i: among[k] } : undefined;
    },
    `a leader among ${among.map((i) => c.nodes[i].id)}`,
    30_000,
  );
  return found.i;
}

Deno.test({
  name:
    "raft: a node started with join is added through the API, catches up, counts in the quorum, and removed nodes (the leader, and one that was down) stop serving; the joined node restarts as a voter",
  ...opts,
  async fn() {
    const c = await RaftCluster.start(3);
    try {
      const l = await c.leader();
      for (let k = 0; k < 5; k++) await putOk(c, l, `before-${k}`, `v${k}`);

      // The joiner knows one member only; it must not campaign or serve.
      const first = (l + 1) % 3;
      const n4 = await spawnJoiner(c, "n4", [c.nodes[first].url]);
      await poll(async () => {
        const s = await c.status(n4);
        return s && s.role !== "bootstrapping" ? s : undefined;
      }, "n4 to start raft");
      const early = await put(c, n4, "x", "1");
      assert.equal(early.status, 503, JSON.stringify(early.body));
      const s4 = (await c.status(n4))!;
      assert.deepEqual(s4.voters, []);
      assert.notEqual(s4.role, "leader");

      // Added through a follower: forwarded to the leader, which dials n4.
      const follower = (l + 2) % 3;
      await c.follows(follower, l);
      const added = await post(c, follower, { id: "n4", url: c.nodes[n4].url });
      assert.equal(added.status, 200, JSON.stringify(added.body));
      assert.deepEqual(
        (added.body.voters as string[]).toSorted(),
        ["n1", "n2", "n3", "n4"],
      );
      // n4 learns the configuration once the leader's append reaches it.
      const listed = await poll(async () => {
        const res = await c.api(n4, "/api/v1/raft/members");
        const b = await res.json();
        const up = b.voters.filter((m: { status: string }) =>
          m.status === "up"
        );
        return up.length === 4 ? b : undefined;
      }, "n4 to list four voters, all linked");
      assert.deepEqual(
        listed.voters.map((m: { id: string }) => m.id).toSorted(),
        ["n1", "n2", "n3", "n4"],
      );
      assert.ok(
        listed.voters.every((m: { status: string }) => m.status === "up"),
        JSON.stringify(listed.voters),
      );

      // Caught up: a linearizable read on n4 sees the earlier writes.
      const read = await poll(async () => {
        const res = await c.api(n4, "/api/v1/raft/kv/before-4");
        return res.ok ? await res.json() : void await res.body?.cancel();
      }, "a read on n4");
      assert.equal(read.value, "v4");
      assert.equal((await putOk(c, n4, "from-n4", "yes")).status, 200);

      // Four voters need three acks: with one original follower dead, a
      // write commits only because n4 acknowledges it.
      await c.kill(first);
      const w = await putOk(c, l, "needs-n4", "ok");
      assert.equal(w.status, 200);

      // Remove the dead node: three voters left.
      const gone = await remove(c, l, c.nodes[first].id);
      assert.equal(gone.status, 200, JSON.stringify(gone.body));
      assert.deepEqual(
        (gone.body.voters as string[]).toSorted(),
        [c.nodes[l].id, c.nodes[follower].id, "n4"].toSorted(),
      );

      // Remove the leader (asked through n4): the two others elect a new one.
      const oldLeader = c.nodes[l].id;
      const out = await remove(c, n4, oldLeader);
      assert.equal(out.status, 200, JSON.stringify(out.body));
      const nl = await leaderAmong(c, [follower, n4]);
      const ns = (await c.status(nl)) as RaftStatusBody;
      assert.deepEqual(
        ns.voters.toSorted(),
        [c.nodes[follower].id, "n4"].toSorted(),
      );
      assert.equal((await putOk(c, nl, "after", "ok")).status, 200);
      const refused = await poll(async () => {
        const r = await put(c, l, "from-removed", "no");
        return r.status === 503 ? r : undefined;
      }, "the removed leader to refuse writes");
      assert.match(
        String((refused.body.error as { message: string }).message),
        /removed/,
      );

      // The node removed while it was dead comes back on its old data: the
      // leader tells it that it is out, and it stays out.
      await c.spawn(first);
      await poll(
        async () => {
          const s = await c.status(first);
          return s?.role === "removed";
        },
        "the restarted removed node to learn it is out",
        30_000,
      );
      assert.equal((await put(c, first, "from-dead", "no")).status, 503);
      const after = (await c.status(nl))!;
      assert.equal(after.role, "leader");
      assert.deepEqual(after.voters.toSorted(), ns.voters.toSorted());

      // n4 restarts from its own log (its config still says join): it is a
      // voter at once, and the two-voter cluster needs it for every write.
      await c.kill(n4);
      await spawnJoiner(c, "n4", [c.nodes[first].url], n4);
      const again = await leaderAmong(c, [follower, n4]);
      await putOk(c, again, "after-restart", "ok");
      const back = await poll(
        async () => {
          const res = await c.api(n4, "/api/v1/raft/kv/after");
          return res.ok ? await res.json() : void await res.body?.cancel();
        },
        "a read on the restarted n4",
        30_000,
      );
      assert.equal(back.value, "ok");
      assert.deepEqual(
        (await c.status(n4))!.voters.toSorted(),
        ns.voters.toSorted(),
      );
    } finally {
      await c.close();
    }
  },
});

Deno.test({
  name:
    "raft: the members API is for admins, names a bad field, and refuses unknown ids, duplicates and a second change while one is pending",
  ...opts,
  async fn() {
    const c = await RaftCluster.start(3);
    try {
      const l = await c.leader();
      await putOk(c, l, "k", "v");
      const p = c.nodes[l].proc!;
      const operator = await p.api("/api/v1/raft/members", {
        method: "POST",
        body: JSON.stringify({ id: "n9", url: "http://127.0.0.1:1" }),
      }, "operator");
      assert.equal(operator.status, 403);
      await operator.body?.cancel();
      const viewerList = await p.api("/api/v1/raft/members", {}, "viewer");
      assert.equal(viewerList.status, 200);
      assert.equal((await viewerList.json()).voters.length, 3);

      const noJson = await post(c, l, "{not json");
      assert.equal(noJson.status, 400);
      const noUrl = await post(c, l, { id: "n9" });
      assert.equal(noUrl.status, 400);
      assert.match(JSON.stringify(noUrl.body), /'url'/);
      const badId = await post(c, l, { id: "", url: "http://127.0.0.1:1" });
      assert.equal(badId.status, 400);
      assert.match(JSON.stringify(badId.body), /'id'/);

      const dup = await post(c, l, {
        id: c.nodes[(l + 1) % 3].id,
        url: "http://127.0.0.1:1",
      });
      assert.equal(dup.status, 409);
      const unknown = await remove(c, l, "n9");
      assert.equal(unknown.status, 404);

      // An add whose URL never answers keeps the leader busy for
      // requestTimeoutMs; meanwhile any other change is refused with 409.
      const [deadPort] = freePorts(1);
      const slow = post(c, l, {
        id: "n9",
        url: `http://127.0.0.1:${deadPort}`,
      });
      const busy = await poll(async () => {
        const r = await remove(c, l, "n9");
        return r.status === 409 ? r : undefined;
      }, "a 409 while the add is pending");
      assert.match(JSON.stringify(busy.body), /in progress/);
      assert.equal((await slow).status, 502);
      // Afterwards the same request is judged on its own again.
      assert.equal((await remove(c, l, "n9")).status, 404);
    } finally {
      await c.close();
    }
  },
});
