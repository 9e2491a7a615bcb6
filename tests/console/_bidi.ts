/**
 * The same small driver as `./_cdp.ts`, for Firefox over WebDriver BiDi
 * (Firefox dropped the Chrome DevTools protocol): Debian's `firefox-esr`
 * headless with `--remote-debugging-port=0`, a fresh profile whose prefs
 * keep it off the network, one tab.
 *
 * @module
 */
import {
  type Browser,
  connectWhenListening,
  type Page,
  pageWaits,
} from "./_cdp.ts";

type Json = Record<string, unknown>;

/** Prefs of the fresh profile: no updates, telemetry or remote services. */
const PREFS: Record<string, unknown> = {
  "app.update.enabled": false,
  "browser.shell.checkDefaultBrowser": false,
  "browser.startup.homepage_override.mstone": "ignore",
  "datareporting.policy.dataSubmissionEnabled": false,
  "toolkit.telemetry.enabled": false,
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "browser.safebrowsing.malware.enabled": false,
  "browser.safebrowsing.phishing.enabled": false,
  "extensions.update.enabled": false,
  "remote.prefs.recommended": true,
};

/** A BiDi remote value as a plain value (the scalars the tests read). */
function plain(v: Json | undefined): unknown {
  if (!v) return undefined;
  switch (v.type) {
    case "undefined":
      return undefined;
    case "null":
      return null;
    case "number":
      return typeof v.value === "string" ? Number(v.value) : v.value;
    default:
      return v.value;
  }
}

/**
 * Starts Firefox at `executable` with a fresh profile.
 *
 * @example Usage
 * ```ts ignore
 * await using browser = await launchFirefox("/usr/bin/firefox-esr");
 * const page = await browser.newPage();
 * ```
 */
export async function launchFirefox(executable: string): Promise<Browser> {
  const profile = await Deno.makeTempDir({ prefix: "plexus-firefox-" });
  await Deno.writeTextFile(
    `${profile}/user.js`,
    Object.entries(PREFS).map(([k, v]) =>
      `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});`
    ).join("\n"),
  );
  const child = new Deno.Command(executable, {
    args: [
      "--headless",
      "--no-remote",
      "--profile",
      profile,
      "--remote-debugging-port=0",
      "--width=1280",
      "--height=1000",
      "about:blank",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { MOZ_CRASHREPORTER_DISABLE: "1" },
  }).spawn();
  const ws = await connectWhenListening(
    child,
    /WebDriver BiDi listening on (ws:\/\/\S+)/,
    "firefox",
    60_000,
    "/session",
  );
  let nextId = 1;
  const pending = new Map<
    number,
    { resolve: (v: Json) => void; reject: (e: Error) => void }
  >();
  const problems: string[] = [];
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "success" || m.type === "error") {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.type === "error") {
        p?.reject(new Error(`BiDi: ${m.error}: ${m.message}`));
      } else p?.resolve(m.result ?? {});
    } else if (m.type === "event" && m.method === "log.entryAdded") {
      const e = m.params as Json;
      if (e.level === "error") problems.push(`${e.type}: ${e.text}`);
    }
  };
  const send = (method: string, params: Json = {}) =>
    new Promise<Json>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  await send("session.new", { capabilities: {} });
  await send("session.subscribe", { events: ["log.entryAdded"] });

  const newPage = async (): Promise<Page> => {
    const { contexts } = await send("browsingContext.getTree", {}) as {
      contexts: { context: string }[];
    };
    const context = contexts[0].context;
    const evaluate = async <T>(expression: string): Promise<T> => {
      const r = await send("script.evaluate", {
        expression,
        target: { context },
        awaitPromise: true,
      });
      if (r.type === "exception") {
        throw new Error(
          `in the page: ${(r.exceptionDetails as Json)?.text ?? "exception"}`,
        );
      }
      return plain(r.result as Json) as T;
    };
    const { waitFor, center } = pageWaits(evaluate);
    const click = async (selector: string) => {
      const { x, y } = await center(selector);
      await send("input.performActions", {
        context,
        actions: [{
          type: "pointer",
          id: "mouse",
          parameters: { pointerType: "mouse" },
          actions: [
            { type: "pointerMove", x, y },
            { type: "pointerDown", button: 0 },
            { type: "pointerUp", button: 0 },
          ],
        }],
      });
    };
    return {
      problems,
      click,
      eval: evaluate,
      waitFor,
      async goto(url) {
        await send("browsingContext.navigate", {
          context,
          url,
          wait: "complete",
        });
      },
      async type(selector, text) {
        await click(selector);
        await send("input.performActions", {
          context,
          actions: [{
            type: "key",
            id: "keyboard",
            actions: [...text].flatMap((ch) => [
              { type: "keyDown", value: ch },
              { type: "keyUp", value: ch },
            ]),
          }],
        });
      },
      async screenshot(path) {
        const { data } = await send("browsingContext.captureScreenshot", {
          context,
        }) as { data: string };
        await Deno.writeFile(path, Uint8Array.fromBase64(data));
      },
      async cookies(url) {
        const { cookies } = await send("storage.getCookies", {
          partition: { type: "storageKey", sourceOrigin: new URL(url).origin },
        }) as {
          cookies: {
            name: string;
            value: Json;
            httpOnly: boolean;
            secure: boolean;
            sameSite?: string;
          }[];
        };
        return cookies.map((c) => ({
          name: c.name,
          value: String(plain(c.value)),
          httpOnly: c.httpOnly,
          secure: c.secure,
          // BiDi says "lax"; the tests compare with CDP's "Lax".
          sameSite: c.sameSite
            ? c.sameSite[0].toUpperCase() + c.sameSite.slice(1)
            : undefined,
        }));
      },
    };
  };

  const close = async () => {
    try {
      await Promise.race([
        send("browser.close").catch(() => {}),
        new Promise((r) => setTimeout(r, 5000)),
      ]);
    } finally {
      ws.close();
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    }
  };
  return { newPage, close, [Symbol.asyncDispose]: close };
}
