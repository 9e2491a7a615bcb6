/**
 * In-process topic router: dot-separated topics with NATS-style wildcards
 * (`*` matches one segment, `>` matches one or more trailing segments),
 * publish/subscribe and request/reply. Transports bridge it between nodes.
 *
 * @module
 */

/** A subscriber callback; may be async. Errors are reported, not rethrown. */
export type TopicHandler = (
  payload: unknown,
  topic: string,
  replyTo?: string,
) => unknown;

/** The router. */
export interface Router {
  /** Subscribes `handler` to `pattern`; returns the function that unsubscribes. */
  subscribe(pattern: string, handler: TopicHandler): () => void;
  /** Delivers `payload` to every matching subscriber; returns how many matched. */
  publish(topic: string, payload: unknown, replyTo?: string): number;
  /** Publishes with a private reply topic and resolves with the first reply. */
  request(
    topic: string,
    payload: unknown,
    options?: { timeoutMs?: number },
  ): Promise<unknown>;
}

const SEGMENT_RE = /^[^.\s*>]+$/;

/**
 * Checks a topic (`wildcards: false`) or a subscription pattern and throws a
 * TypeError naming the bad segment.
 */
export function validateTopic(topic: string, wildcards = false): string[] {
  if (typeof topic !== "string" || topic.length === 0) {
    throw new TypeError(`Cannot parse topic: it is empty`);
  }
  const parts = topic.split(".");
  parts.forEach((p, i) => {
    if (wildcards && (p === "*" || (p === ">" && i === parts.length - 1))) {
      return;
    }
    if (!SEGMENT_RE.test(p)) {
      throw new TypeError(
        `Cannot parse topic: segment ${i + 1} is ${
          p === "" ? "empty" : `'${p}'`
        } in '${topic}'`,
      );
    }
  });
  return parts;
}

/** Whether `topic` matches the subscription `pattern`. */
export function topicMatches(pattern: string, topic: string): boolean {
  const p = pattern.split(".");
  const t = topic.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return t.length > i;
    if (i >= t.length) return false;
    if (p[i] !== "*" && p[i] !== t[i]) return false;
  }
  return p.length === t.length;
}

/** Options for {@linkcode createRouter}. */
export interface RouterOptions {
  /** Called when a handler throws or rejects. */
  onError?: (err: unknown, topic: string) => void;
}

/**
 * Creates an in-process router.
 *
 * @example Usage
 * ```ts
 * import { createRouter } from "./router.ts";
 * const router = createRouter();
 * router.subscribe("agent.*.heartbeat", (p) => console.log(p));
 * router.publish("agent.a1.heartbeat", { ok: true });
 * ```
 */
export function createRouter(options: RouterOptions = {}): Router {
  const subs = new Set<{ pattern: string; handler: TopicHandler }>();
  let inbox = 0;
  const router: Router = {
    subscribe(pattern, handler) {
      validateTopic(pattern, true);
      const sub = { pattern, handler };
      subs.add(sub);
      return () => void subs.delete(sub);
    },
    publish(topic, payload, replyTo) {
      validateTopic(topic);
      let n = 0;
      for (const sub of [...subs]) {
        if (!topicMatches(sub.pattern, topic)) continue;
        n++;
        try {
          const r = sub.handler(payload, topic, replyTo);
          if (r instanceof Promise) {
            r.catch((err) => options.onError?.(err, topic));
          }
        } catch (err) {
          options.onError?.(err, topic);
        }
      }
      return n;
    },
    request(topic, payload, { timeoutMs = 5000 } = {}) {
      const replyTo = `_inbox.${++inbox}.${crypto.randomUUID().slice(0, 8)}`;
      return new Promise((resolve, reject) => {
        const off = router.subscribe(replyTo, (reply) => {
          clearTimeout(timer);
          off();
          resolve(reply);
        });
        const timer = setTimeout(() => {
          off();
          reject(
            new Error(`Request on '${topic}' timed out after ${timeoutMs} ms`),
          );
        }, timeoutMs);
        if (router.publish(topic, payload, replyTo) === 0) {
          clearTimeout(timer);
          off();
          reject(new Error(`No subscriber for request on '${topic}'`));
        }
      });
    },
  };
  return router;
}
