/**
 * An in-memory stand-in for the durable storage a driver keeps: what
 * {@linkcode MemoryStorage.save} has taken is what survives a crash.
 *
 * @module
 */
import type {
  Entry,
  HardState,
  PersistedState,
  Ready,
  Snapshot,
} from "./types.ts";

/**
 * Durable Raft state held in memory, applying a {@linkcode Ready} the way a
 * disk-backed driver would (snapshot, then entries with truncation, then the
 * hard state).
 *
 * @example Usage
 * ```ts
 * import { createRaft } from "./core.ts";
 * import { MemoryStorage } from "./storage.ts";
 * const storage = new MemoryStorage();
 * const node = createRaft({ id: "1", peers: ["1"], random: () => 0 });
 * node.campaign();
 * const rd = node.ready();
 * storage.save(rd);
 * node.advance(rd);
 * const again = createRaft({ id: "1", peers: ["1"], storage: storage.state() });
 * again.term; // 1
 * ```
 */
export class MemoryStorage {
  hardState: HardState = { term: 0, vote: "", commit: 0 };
  snapshot?: Snapshot;
  entries: Entry[] = [];

  /** Persists a Ready's snapshot, entries and hard state. */
  save(rd: Ready): void {
    if (rd.snapshot) {
      this.snapshot = rd.snapshot;
      this.entries = [];
    }
    if (rd.entries.length > 0) {
      const first = rd.entries[0].index;
      this.entries = this.entries.filter((e) => e.index < first).concat(
        rd.entries,
      );
    }
    if (rd.hardState) this.hardState = { ...rd.hardState };
  }

  /** Replaces entries up to the snapshot's index with the snapshot. */
  compact(snapshot: Snapshot): void {
    this.snapshot = snapshot;
    this.entries = this.entries.filter((e) => e.index > snapshot.index);
  }

  /** A copy of what is stored, to restart a node from. */
  state(): PersistedState {
    return structuredClone({
      hardState: this.hardState,
      snapshot: this.snapshot,
      entries: this.entries,
    });
  }
}
