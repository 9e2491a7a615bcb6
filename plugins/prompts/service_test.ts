import assert from "node:assert/strict";
import { createLogger } from "../../core/observe/logger.ts";
import type { AgentGateway } from "../../gateway/gateway.ts";
import { promptsConfigSchema } from "./config.ts";
import { createDidResolvers } from "./did.ts";
import { createPromptService } from "./service.ts";

/** Counts `abort` listeners added to any AbortSignal and not removed, until `restore`. */
function countAbortListeners() {
  const proto = AbortSignal.prototype as unknown as Record<string, unknown>;
  const live = new Set<unknown>();
  const add = EventTarget.prototype.addEventListener;
  const remove = EventTarget.prototype.removeEventListener;
  proto.addEventListener = function (
    this: EventTarget,
    type: string,
    fn: EventListener,
    o?: AddEventListenerOptions,
  ) {
    if (type === "abort") live.add(fn);
    return add.call(this, type, fn, o);
  };
  proto.removeEventListener = function (
    this: EventTarget,
    type: string,
    fn: EventListener,
    o?: EventListenerOptions,
  ) {
    if (type === "abort") live.delete(fn);
    return remove.call(this, type, fn, o);
  };
  return {
    live: () => live.size,
    restore: () => {
      delete proto.addEventListener;
      delete proto.removeEventListener;
    },
  };
}

Deno.test("prompt service: an answered prompt leaves no abort listener behind, and a later abort of the request asks nothing of the agents", async () => {
  const sent: unknown[] = [];
  const gateway = {
    capabilities: () => ({ prompt: ["a1"] }),
    request: (_agent: string, _topic: string, body: unknown) => {
      sent.push(body);
      return Promise.resolve({ response: "ok" });
    },
  } as unknown as AgentGateway;
  const service = createPromptService({
    gateway,
    log: createLogger({ sinks: [] }),
    config: promptsConfigSchema.parse({}),
    nodeId: "n1",
    balancer: { name: "first", pick: (c) => c[0], report: () => {} },
    resolvers: createDidResolvers(),
  });
  const request = new AbortController();
  const counted = countAbortListeners();
  let response: string | undefined;
  try {
    response = (await service.answer(
      {
        prompt: "hi",
        sage: false,
        metadata: {},
        cacheKeyFields: [],
        noCache: false,
      },
      { signal: request.signal },
    )).response;
    // Deno aborts a request's signal after its response too.
    assert.equal(counted.live(), 0, "no abort listener left behind");
  } finally {
    counted.restore();
  }
  assert.equal(response, "ok");
  request.abort();
  assert.equal(sent.length, 1, "no cancel sent after the answer");
  assert.equal(service.active, 0);
});
