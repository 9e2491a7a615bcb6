/**
 * What the event tests on real nodes share: reading a stream of the event
 * store straight from KV, and the task API calls.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { PlexusProcess } from "../integration/_process.ts";
import {
  createEventStore,
  type StoredEvent,
} from "../../plugins/events/store.ts";

/** Every stored event of `stream` after offset `after`, in offset order. */
export async function storedEvents(
  kv: Deno.Kv,
  stream: string,
  after = "",
): Promise<StoredEvent[]> {
  const store = createEventStore(kv);
  const out: StoredEvent[] = [];
  try {
    for (;;) {
      const page = await store.read({ after }, { streams: [stream] });
      out.push(...page.events);
      if (page.next === after) return out;
      after = page.next;
    }
  } finally {
    await store.close();
  }
}

/** `content-type: application/json`. */
export const json = { "content-type": "application/json" };

/** Submits a task through node `n`'s API; its id. */
export async function submit(n: PlexusProcess, body: unknown): Promise<string> {
  const res = await n.api("/api/v1/tasks", {
    method: "POST",
    headers: json,
    body: JSON.stringify(body),
  });
  const out = await res.json();
  assert.equal(res.status, 202, JSON.stringify(out));
  return out.id;
}

/** `GET /api/v1/tasks/{id}` through node `n`. */
export const view = async (n: PlexusProcess, id: string) =>
  await (await n.api(`/api/v1/tasks/${id}`)).json();
