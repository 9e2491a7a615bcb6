/**
 * Writer clients for the real-process Raft tests: each writes unique keys to
 * random running nodes and remembers the writes the cluster acknowledged.
 *
 * @module
 */
import type { RaftCluster } from "./_raft_cluster.ts";

/** Writers running against a cluster. */
export interface Writers {
  /** Acknowledged writes: key → value. */
  acked: Map<string, string>;
  /** Attempts that failed (no leader, timeout, node killed). */
  failed: () => number;
  stop(): Promise<void>;
}

/** Starts `n` writer loops. */
export function startWriters(c: RaftCluster, n: number): Writers {
  const acked = new Map<string, string>();
  let failed = 0;
  let stopped = false;
  const loop = async (w: number) => {
    let seq = 0;
    while (!stopped) {
      const up = c.nodes.map((_, i) => i).filter((i) => c.running(i));
      if (up.length === 0) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      const i = up[Math.floor(Math.random() * up.length)];
      const key = `w${w}-${seq++}`;
      const value = crypto.randomUUID().slice(0, 8);
      try {
        const res = await c.api(i, `/api/v1/raft/kv/${key}`, {
          method: "PUT",
          body: JSON.stringify({ value }),
        });
        if (res.ok) {
          await res.json();
          acked.set(key, value);
        } else {
          await res.body?.cancel();
          failed++;
          await new Promise((r) => setTimeout(r, 10));
        }
      } catch {
        failed++;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  };
  const loops = Array.from({ length: n }, (_, w) => loop(w));
  return {
    acked,
    failed: () => failed,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/** Reads every key back through node `i` (linearizable reads); returns the mismatches. */
export async function verifyAcked(
  c: RaftCluster,
  i: number,
  acked: Map<string, string>,
): Promise<string[]> {
  const wrong: string[] = [];
  const entries = [...acked];
  const parallel = 16;
  for (let k = 0; k < entries.length; k += parallel) {
    await Promise.all(
      entries.slice(k, k + parallel).map(async ([key, v]) => {
        for (let attempt = 0;; attempt++) {
          const res = await c.api(i, `/api/v1/raft/kv/${key}`);
          if (res.ok) {
            const body = await res.json() as { value: string | null };
            if (body.value !== v) {
              wrong.push(`${key}: acked ${v}, read ${body.value}`);
            }
            return;
          }
          await res.body?.cancel();
          if (attempt > 50) {
            wrong.push(`${key}: read failed with ${res.status}`);
            return;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      }),
    );
  }
  return wrong;
}
