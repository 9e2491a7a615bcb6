/**
 * The demo agents of the prompt service, built on the SDK: a `root` agent
 * (capability `prompt`) that routes by scenario to a `planning` agent
 * (`plan`) and an `ordering` agent (`order`) through the node. Answers are
 * deterministic and rule based (the same prompt always gets the same
 * answer), so tests and the README can show exact output.
 *
 * The hook for a real model: give {@linkcode DemoAgentOptions.llm} (or
 * `--llm-url`/`--llm-model` on `deno task agent --as …`), and each agent
 * asks it for its text and falls back to the rules when it fails.
 * {@linkcode ollamaLlm} speaks the Ollama-compatible `POST /api/generate`.
 *
 * @example Run the root agent
 * ```ts ignore
 * const agent = new AgentClient({ url, id: key.id, privateKey: seed });
 * await startDemoAgent(agent, "root", { key: seed });
 * await agent.connect();
 * ```
 *
 * @module
 */
import type { AgentClient, Subscription } from "../../../sdk/client.ts";
import {
  type PromptHopContext,
  servePrompts,
} from "../../../sdk/prompt_agent.ts";

/** The demo roles and the capability each one serves. */
export const DEMO_ROLES = {
  root: "prompt",
  planning: "plan",
  ordering: "order",
} as const;

/** One demo role. */
export type DemoRole = keyof typeof DEMO_ROLES;

/** Asks a language model for a text; undefined (or a throw) falls back to the rules. */
export type LlmHook = (
  role: DemoRole,
  prompt: string,
) => Promise<string | undefined>;

/** Options of {@linkcode startDemoAgent}. */
export interface DemoAgentOptions {
  /** The agent's key (SAGE signatures): its 32-byte seed. */
  key: Uint8Array;
  /** A model to ask first (see {@linkcode ollamaLlm}). */
  llm?: LlmHook;
}

/**
 * An {@linkcode LlmHook} for an Ollama-compatible endpoint
 * (`POST {url}/api/generate` with `{model, prompt, stream: false}`,
 * answering `{response}`), with a timeout.
 *
 * @example Usage
 * ```ts ignore
 * const llm = ollamaLlm("http://127.0.0.1:11434", "llama3.2");
 * ```
 */
export function ollamaLlm(
  url: string,
  model: string,
  timeoutMs = 20_000,
): LlmHook {
  return async (role, prompt) => {
    const res = await fetch(new URL("/api/generate", url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model,
        stream: false,
        prompt:
          `You are the ${role} agent of a travel and shopping assistant. ` +
          `Answer in at most three sentences.\n\n${prompt}`,
      }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`${url} answered ${res.status}`);
    }
    const body = await res.json() as { response?: unknown };
    return typeof body.response === "string" ? body.response.trim() : undefined;
  };
}

/**
 * The scenario a prompt is about when the client named none: by keywords.
 *
 * @example Usage
 * ```ts
 * import { detectScenario } from "./agents.ts";
 * detectScenario("Find me a hotel in Porto"); // "hotel"
 * detectScenario("hello"); // "general"
 * ```
 */
export function detectScenario(prompt: string): string {
  const p = prompt.toLowerCase();
  if (/\b(hotel|room|stay|night|nights|check-?in)\b/.test(p)) return "hotel";
  if (/\b(order|buy|purchase|deliver|delivery|shop)\b/.test(p)) return "order";
  if (/\b(plan|trip|itinerary|schedule|travel)\b/.test(p)) return "plan";
  return "general";
}

/** A short stable id for a text (the same text, the same id). */
async function stableId(text: string): Promise<string> {
  const d = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return new Uint8Array(d).slice(0, 4).toHex().toUpperCase();
}

const quote = (s: string) => `"${s.length > 80 ? `${s.slice(0, 80)}…` : s}"`;

/** The rule-based answers, by role. */
export const demoRules: Record<
  DemoRole,
  (hop: PromptHopContext) => Promise<string>
> = {
  async root(hop) {
    const scenario = hop.scenario ?? detectScenario(hop.prompt);
    if (scenario === "hotel") {
      await hop.stream("Hotel request handled.");
      const plan = await hop.ask("plan", { prompt: `stay: ${hop.prompt}` });
      await hop.stream(` ${plan}`);
      const order = await hop.ask("order", {
        prompt: hop.prompt,
        item: "hotel room",
      });
      await hop.stream(` ${order}`);
      return `Hotel request handled. ${plan} ${order}`;
    }
    if (scenario === "order") {
      const order = await hop.ask("order", { prompt: hop.prompt });
      return `Order request handled. ${order}`;
    }
    if (scenario === "plan") {
      const plan = await hop.ask("plan", { prompt: hop.prompt });
      return `Planning request handled. ${plan}`;
    }
    return `I can help with hotels, orders and plans. You said ${
      quote(hop.prompt)
    }.`;
  },
  planning(hop) {
    const stay = hop.prompt.startsWith("stay: ");
    const what = stay ? hop.prompt.slice(6) : hop.prompt;
    const steps = stay
      ? ["fix the dates", "shortlist three hotels", "reserve the best one"]
      : ["clarify the goal and budget", "compare the options", "confirm"];
    return Promise.resolve(
      `Plan for ${quote(what)}: ${
        steps.map((s, i) => `${i + 1}) ${s}`).join("; ")
      }.`,
    );
  },
  async ordering(hop) {
    const p = hop.payload as { item?: unknown } | undefined;
    const item = typeof p?.item === "string" ? p.item : hop.prompt;
    return `Order ORD-${await stableId(hop.prompt + "\0" + item)} placed for ${
      quote(item)
    }.`;
  },
};

/**
 * Makes `agent` the demo agent of `role`: it serves the role's capability
 * (`prompt`, `plan` or `order`). Call before `agent.connect()` (or await
 * both). The agent must be enrolled with the `worker` role.
 */
export function startDemoAgent(
  agent: AgentClient,
  role: DemoRole,
  options: DemoAgentOptions,
): Promise<Subscription> {
  const rules = demoRules[role];
  return servePrompts(agent, DEMO_ROLES[role], async (hop) => {
    if (options.llm) {
      try {
        const text = await options.llm(role, hop.prompt);
        if (text) return text;
      } catch {
        // The rules answer when the model cannot.
      }
    }
    return await rules(hop);
  }, { key: options.key });
}
