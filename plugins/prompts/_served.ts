/**
 * For tests: `servePrompts` on a stand-in `AgentClient`, with the function
 * the node's hops reach, to call directly (`{payload}` as the gateway hands
 * a request to the agent).
 *
 * @module
 */
import type { AgentClient } from "../../sdk/client.ts";
import {
  type PromptHandler,
  servePrompts,
  type ServePromptsOptions,
} from "../../sdk/prompt_agent.ts";

/** What `servePrompts` handles a hop with: `{payload}` in, the answer out. */
export type ServedHop = (m: { payload: unknown }) => Promise<unknown>;

/** `servePrompts(agent, "prompt", handler, options)` on a stand-in agent; its hop function. */
export async function servedInProcess(
  handler: PromptHandler,
  options: ServePromptsOptions,
): Promise<ServedHop> {
  let served: ServedHop | undefined;
  const agent = {
    handle: (_: string, fn: ServedHop) => {
      served = fn;
      return Promise.resolve({});
    },
  } as unknown as AgentClient;
  await servePrompts(agent, "prompt", handler, options);
  return served!;
}
