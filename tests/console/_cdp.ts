/**
 * A small Chrome DevTools Protocol driver for the console's browser test:
 * Debian's chromium started headless with `--remote-debugging-port=0`, one
 * page target, real mouse and keyboard input, screenshots and the page's
 * errors. Written here rather than taken from playwright-core because that
 * package reads `/proc` when imported, which Deno allows only with
 * `--allow-all`, and the test task runs with narrower flags.
 *
 * @module
 */

/** Flags that keep chromium off a network it cannot reach here. */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
  "--window-size=1280,1000",
];

type Json = Record<string, unknown>;

/** One open page. */
export interface Page {
  /** Navigates and waits for the load event. */
  goto(url: string): Promise<void>;
  /** The value of a JavaScript expression in the page (awaited). */
  eval<T = unknown>(expression: string): Promise<T>;
  /** Waits until `expression` is truthy, polling every 100 ms. */
  waitFor(expression: string, what: string, timeoutMs?: number): Promise<void>;
  /** A real mouse click in the middle of the element `selector`. */
  click(selector: string): Promise<void>;
  /** Focuses `selector` and types `text`. */
  type(selector: string, text: string): Promise<void>;
  /** Writes a PNG of the viewport to `path`. */
  screenshot(path: string): Promise<void>;
  /** The browser's cookies for `url`. */
  cookies(url: string): Promise<
    {
      name: string;
      value: string;
      httpOnly: boolean;
      secure: boolean;
      sameSite?: string;
    }[]
  >;
  /** Script errors, console errors and CSP reports seen so far. */
  problems: string[];
}

/** A running chromium. */
export interface Browser extends AsyncDisposable {
  newPage(): Promise<Page>;
  close(): Promise<void>;
}

/**
 * `waitFor` and `center` over a page's `evaluate`, the same for both
 * drivers (CDP here, BiDi in `./_bidi.ts`).
 *
 * @example Usage
 * ```ts ignore
 * const { waitFor, center } = pageWaits(evaluate);
 * await waitFor("document.readyState === 'complete'", "load");
 * ```
 */
export function pageWaits(
  evaluate: <T>(expression: string) => Promise<T>,
): {
  waitFor: Page["waitFor"];
  center: (selector: string) => Promise<{ x: number; y: number }>;
} {
  const waitFor = async (
    expression: string,
    what: string,
    timeoutMs = 30_000,
  ) => {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      try {
        last = await evaluate(expression);
        if (last) return;
      } catch (err) {
        last = (err as Error).message; // mid-navigation: try again
      }
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what} (${expression}); last: ${
            JSON.stringify(last)
          }`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  // The middle of the element, scrolled into view; a JSON string because
  // BiDi hands objects back as remote values.
  const center = async (selector: string) => {
    await waitFor(
      `!!document.querySelector(${JSON.stringify(selector)})`,
      `element ${selector}`,
    );
    return JSON.parse(
      await evaluate<string>(
        `(() => { const e = document.querySelector(${
          JSON.stringify(selector)
        }); e.scrollIntoView({ block: "center" }); const r = e.getBoundingClientRect(); return JSON.stringify({ x: Math.round(r.x + r.width / 2), y: Math.round(r.y + r.height / 2) }); })()`,
      ),
    ) as { x: number; y: number };
  };
  return { waitFor, center };
}

/**
 * Reads the browser's stderr until `pattern` (one capture group: the
 * WebSocket address) matches, then keeps draining it so the browser never
 * blocks on a full pipe; kills the browser if it does not listen within
 * `timeoutMs`. Returns an open WebSocket to `path` under that address.
 *
 * @example Usage
 * ```ts ignore
 * const ws = await connectWhenListening(child, /listening on (ws:\/\/\S+)/, "chromium", 30_000);
 * ```
 */
export async function connectWhenListening(
  child: Deno.ChildProcess,
  pattern: RegExp,
  name: string,
  timeoutMs: number,
  path = "",
): Promise<WebSocket> {
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let endpoint: string | undefined;
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  while (!endpoint) {
    const { value, done } = await reader.read();
    if (done) {
      clearTimeout(timer);
      throw new Error(`${name} exited before listening: ${seen.slice(-500)}`);
    }
    seen += value;
    endpoint = pattern.exec(seen)?.[1];
  }
  clearTimeout(timer);
  (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })().catch(() => {});
  const ws = new WebSocket(`${endpoint}${path}`);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`cannot connect to ${endpoint}`));
  });
  return ws;
}

/**
 * Starts chromium at `executable` with a fresh profile.
 *
 * @example Usage
 * ```ts ignore
 * await using browser = await launch("/usr/bin/chromium");
 * const page = await browser.newPage();
 * await page.goto("http://127.0.0.1:8086/");
 * ```
 */
export async function launch(executable: string): Promise<Browser> {
  const profile = await Deno.makeTempDir({ prefix: "plexus-chromium-" });
  const child = new Deno.Command(executable, {
    args: [
      ...CHROMIUM_ARGS,
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      "about:blank",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
  const ws = await connectWhenListening(
    child,
    /DevTools listening on (ws:\/\/\S+)/,
    "chromium",
    30_000,
  );
  let nextId = 1;
  const pending = new Map<
    number,
    { resolve: (v: Json) => void; reject: (e: Error) => void }
  >();
  const listeners = new Set<
    (method: string, params: Json, session?: string) => void
  >();
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.id !== undefined) {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.error) p?.reject(new Error(`CDP: ${m.error.message}`));
      else p?.resolve(m.result ?? {});
    } else {
      for (const l of listeners) l(m.method, m.params ?? {}, m.sessionId);
    }
  };
  const send = (method: string, params: Json = {}, sessionId?: string) =>
    new Promise<Json>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params, sessionId }));
    });

  const newPage = async (): Promise<Page> => {
    const { targetId } = await send("Target.createTarget", {
      url: "about:blank",
    });
    const { sessionId } = await send("Target.attachToTarget", {
      targetId,
      flatten: true,
    }) as { sessionId: string };
    const call = (method: string, params: Json = {}) =>
      send(method, params, sessionId);
    const problems: string[] = [];
    let loads = 0;
    listeners.add((method, params, session) => {
      if (session !== sessionId) return;
      if (method === "Page.loadEventFired") loads++;
      else if (method === "Runtime.exceptionThrown") {
        const d = params.exceptionDetails as Json;
        problems.push(
          `page error: ${(d.exception as Json)?.description ?? d.text}`,
        );
      } else if (
        method === "Runtime.consoleAPICalled" && params.type === "error"
      ) {
        problems.push(
          `console: ${
            (params.args as Json[]).map((a) => a.value ?? a.description)
              .join(" ")
          }`,
        );
      } else if (method === "Log.entryAdded") {
        const e = params.entry as Json;
        // Failed loads of pages we navigate away from are not the page's fault.
        if (e.level === "error" && e.source !== "network") {
          problems.push(`log: ${e.text}`);
        }
      }
    });
    await call("Page.enable");
    await call("Runtime.enable");
    await call("Log.enable");
    await call("Network.enable");

    const evaluate = async <T>(expression: string): Promise<T> => {
      const r = await call("Runtime.evaluate", {
        expression,
        returnByValue: true,
        awaitPromise: true,
      });
      if (r.exceptionDetails) {
        const d = r.exceptionDetails as Json;
        throw new Error(
          `in the page: ${(d.exception as Json)?.description ?? d.text}`,
        );
      }
      return (r.result as Json).value as T;
    };
    const { waitFor, center } = pageWaits(evaluate);
    const click = async (selector: string) => {
      const { x, y } = await center(selector);
      for (const type of ["mousePressed", "mouseReleased"]) {
        await call("Input.dispatchMouseEvent", {
          type,
          x,
          y,
          button: "left",
          clickCount: 1,
        });
      }
    };
    return {
      problems,
      click,
      async goto(url) {
        const before = loads;
        await call("Page.navigate", { url });
        await waitFor(
          `document.readyState === "complete"`,
          `load of ${url}`,
        );
        if (loads === before) {
          await waitFor("true", "load event");
        }
      },
      eval: evaluate,
      waitFor,
      async type(selector, text) {
        await click(selector);
        await call("Input.insertText", { text });
      },
      async screenshot(path) {
        const { data } = await call("Page.captureScreenshot", {
          format: "png",
        }) as { data: string };
        await Deno.writeFile(path, Uint8Array.fromBase64(data));
      },
      async cookies(url) {
        const { cookies } = await call("Network.getCookies", {
          urls: [url],
        }) as { cookies: Awaited<ReturnType<Page["cookies"]>> };
        return cookies;
      },
    };
  };

  const close = async () => {
    try {
      await send("Browser.close").catch(() => {});
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
