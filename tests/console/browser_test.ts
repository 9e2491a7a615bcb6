/**
 * The console in real browsers: Debian's chromium (over the Chrome DevTools
 * protocol, `./_cdp.ts`) and Firefox ESR (over WebDriver BiDi,
 * `./_bidi.ts`), each against three real nodes (kv-lease over a shared KV
 * file) and a real OpenID provider (npm oidc-provider) on loopback. Signs in
 * through the provider, sees the cluster, watches the leader die and another
 * take over live, sends an agent a test message, replays and purges a dead
 * letter, reloads a plugin, logs out. Screenshots go to
 * `$PLEXUS_RUN/console-browser/{browser}/` (else a temp dir), printed at the
 * end.
 *
 * Needs the browsers (`bash scripts/browser.sh` installs them with apt): a
 * missing one is ignored with the reason, a failure under
 * PLEXUS_REQUIRE_SERVICES=1.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually, fileTarget, startCluster } from "../cluster/_cluster.ts";
import type { PlexusProcess } from "../integration/_process.ts";
import { startIdp } from "./_idp.ts";
import { type Browser, launch, type Page } from "./_cdp.ts";
import { launchFirefox } from "./_bidi.ts";
import { DurableQueue } from "../../core/state/queue.ts";
import type { TaskBody } from "../../core/tasks.ts";
import { generateAgentKey } from "../../sdk/keys.ts";

const REQUIRED = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const LEASE = { leaseMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 200 };

const BROWSERS: {
  name: string;
  executable: string;
  launch: (executable: string) => Promise<Browser>;
}[] = [
  {
    name: "chromium",
    executable: Deno.env.get("PLEXUS_CHROMIUM") ?? "/usr/bin/chromium",
    launch,
  },
  {
    name: "firefox",
    executable: Deno.env.get("PLEXUS_FIREFOX") ?? "/usr/bin/firefox-esr",
    launch: launchFirefox,
  },
];

async function leaderOf(node: PlexusProcess): Promise<string | null> {
  const res = await node.api("/api/v1/cluster", {
    signal: AbortSignal.timeout(5000),
  });
  return (await res.json()).leader;
}

async function scenario(
  browserName: string,
  launchBrowser: () => Promise<Browser>,
): Promise<void> {
  const shots = join(
    Deno.env.get("PLEXUS_RUN") ?? await Deno.makeTempDir(),
    "console-browser",
    browserName,
  );
  await Deno.mkdir(shots, { recursive: true });
  // The provider listens first (its URL goes into the nodes' config) and
  // learns the nodes' callback URLs when the first browser arrives.
  let nodeUrls: string[] = [];
  await using idp = await startIdp({
    redirectUris: () => nodeUrls.map((u) => `${u}/ui/auth/callback`),
    groups: { alice: ["plexus-admins"] },
  });
  const issuer = idp.issuer;
  await using c = await startCluster(fileTarget, {
    nodes: 3,
    args: [
      "--consensus",
      "kv-lease",
      "--plugin",
      "./plugins/examples/hello.ts",
      "--plugin",
      "builtin:sagas",
    ],
    config: {
      pluginConfig: {
        "kv-lease": LEASE,
        // The sagas view's saga names a task type no node handles.
        sagas: { checkTaskTypes: false },
        dashboard: {
          provider: {
            issuer,
            clientId: "plexus",
            clientSecret: "plexus-test-secret",
            scopes: ["openid", "profile", "email", "groups"],
            roles: { "plexus-admins": "admin" },
            allowHttp: true,
          },
        },
      },
    },
  });
  assert.ok(c, "a shared KV file is always available");
  nodeUrls = c.nodes.map((n) => n.url!);
  const first = await eventually(
    () => Promise.all(c.nodes.map(leaderOf)),
    (ls) => ls[0] !== null && ls.every((l) => l === ls[0]),
    "the nodes to agree on a leader",
  ).then((ls) => ls[0]!);
  // The page is served by a node that is not the leader, so it survives.
  const ids = c.nodes.map((_, i) => `n${i + 1}`);
  const home = c.nodes[ids.findIndex((id) => id !== first)];
  const victim = c.nodes[ids.indexOf(first)];

  const browser = await launchBrowser();
  let page: Page | undefined;
  try {
    page = await browser.newPage();
    const on = (path: string) =>
      `location.href === ${JSON.stringify(`${home.url}${path}`)}`;

    // Sign in: / (the sign-in page) → the provider's form → back signed in.
    await page.goto(`${home.url}/`);
    await page.waitFor(
      `${on("/")} && !!document.querySelector("#sign-in")`,
      "the sign-in page at /",
    );
    await page.screenshot(join(shots, "1-login.png"));
    await page.click("#sign-in");
    await page.waitFor(
      `location.href.startsWith(${
        JSON.stringify(`${issuer}/interaction/`)
      }) && !!document.querySelector("#account")`,
      "the provider's sign-in form",
    );
    await page.type("#account", "alice");
    await page.click("#idp-submit");
    await page.waitFor(
      `${
        on("/ui/")
      } && /alice/.test(document.querySelector("#who")?.textContent ?? "")`,
      "the console, signed in",
    );
    const cookie = (await page.cookies(home.url!)).find((k) =>
      k.name === "plexus_session"
    );
    assert.ok(cookie, "the session cookie is set on http://127.0.0.1");
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.secure, true);
    assert.equal(cookie.sameSite, "Lax");
    assert.match(
      await page.eval<string>(`document.querySelector("#who").textContent`),
      /alice \(admin\)/,
    );

    // The cluster, live: three members and the agreed leader, and log lines.
    await page.waitFor(
      `document.querySelector("#leader")?.textContent === ${
        JSON.stringify(first)
      } && document.querySelectorAll("#members tbody tr").length === 3`,
      `leader ${first} and three members on the page`,
    );
    // Each node's load from the registry: its memory in MiB.
    await page.waitFor(
      `[...document.querySelectorAll("#members tbody tr")].every((r) => /MiB/.test(r.children[6].textContent))`,
      "every member's memory on the page",
    );
    await page.waitFor(
      `document.querySelectorAll("#logs li").length > 0`,
      "log lines",
    );
    await page.screenshot(join(shots, "2-cluster.png"));

    // The leader dies: the page shows another leader without a reload.
    victim.signal("SIGKILL");
    await page.waitFor(
      `(() => { const t = document.querySelector("#leader")?.textContent; return !!t && t !== ${
        JSON.stringify(first)
      } && t !== "none" && t !== "?"; })()`,
      "a new leader on the page",
      60_000,
    );
    const next = await page.eval<string>(
      `document.querySelector("#leader").textContent`,
    );
    assert.ok(ids.includes(next) && next !== first, `new leader '${next}'`);
    await page.screenshot(join(shots, "3-leader-changed.png"));

    // A saga whose first step names a task type no node handles: its first
    // attempt fails at once and the next is ten minutes away, so the page
    // shows it live as retrying, with the step after it pending.
    const saga = await home.api("/api/v1/sagas", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        id: "console-saga",
        definition: {
          name: "hold",
          steps: [
            {
              id: "reserve",
              run: { kind: "task", type: "console.never" },
              retry: {
                maxAttempts: 10,
                backoffMs: 600_000,
                maxBackoffMs: 600_000,
              },
            },
            { id: "charge", run: { kind: "task", type: "console.never" } },
          ],
        },
      }),
    });
    assert.equal(saga.status, 201, await saga.text());
    await page.waitFor(
      `(() => { const r = document.querySelector('[data-saga="console-saga"]'); return !!r && r.querySelector('[data-step="reserve"]')?.textContent === "reserve: retrying" && r.querySelector(".retrying") !== null && r.querySelector('[data-step="charge"]')?.textContent === "charge: pending"; })()`,
      "the saga and its steps on the page",
    );
    await page.screenshot(join(shots, "3b-saga.png"));

    // An enrolled agent, offline: listed; a test message sent from the
    // page waits in its outbox, and the page counts it.
    const agent = await generateAgentKey();
    const enrolled = await home.api("/api/v1/agents", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        agentId: agent.id,
        publicKey: agent.publicKey,
        roles: ["agent"],
      }),
    });
    assert.equal(enrolled.status, 201, await enrolled.text());
    const agentRow = `[data-agent=${JSON.stringify(agent.id)}]`;
    await page.waitFor(
      `document.querySelector(${
        JSON.stringify(agentRow + " td:nth-child(3)")
      })?.textContent === "offline"`,
      "the enrolled agent, offline, on the page",
    );
    await page.click(`[data-pick=${JSON.stringify(agent.id)}]`);
    await page.type("#agent-send [name=channel]", "policies");
    await page.type("#agent-send [name=message]", "hello from the console");
    await page.click("#agent-send button");
    await page.waitFor(
      `/: queued/.test(document.querySelector("#toast")?.textContent ?? "")`,
      "the send's answer on the page",
    );
    await page.waitFor(
      `document.querySelector(${
        JSON.stringify(agentRow + " .queued")
      })?.textContent === "1"`,
      "one queued message for the agent on the page",
    );

    // A task no node handles dies; the page lists it, replays it (it runs
    // and dies again: a later death), then purges it.
    const tasks = new DurableQueue<TaskBody>(c.kv, "tasks");
    const { id } = await tasks.enqueue({ type: "console-test", payload: 1 }, {
      maxAttempts: 1,
    });
    const died = await eventually(
      () => tasks.get(id),
      (m) => m?.state === "dead",
      "the test task to die",
    );
    const row = `[data-dead=${JSON.stringify(id)}]`;
    await page.waitFor(
      `!!document.querySelector(${JSON.stringify(row)})`,
      "the dead letter on the page",
    );
    await page.screenshot(join(shots, "4-dead-letter.png"));
    await page.click(`[data-replay=${JSON.stringify(id)}]`);
    await eventually(
      () => tasks.get(id),
      (m) => m?.state !== "dead" || m.deadAt! > died!.deadAt!,
      "the replayed task to run again",
    );
    await page.waitFor(
      `/replayed/.test(document.querySelector("#toast")?.textContent ?? "")`,
      "the replay's answer on the page",
    );
    await eventually(
      () => tasks.get(id),
      (m) => m?.state === "dead",
      "the replayed task to die again",
    );
    await page.click(`[data-purge=${JSON.stringify(id)}]`);
    await eventually(
      () => tasks.get(id),
      (m) => m === null,
      "the purged task to be gone",
    );
    await page.waitFor(
      `!document.querySelector(${JSON.stringify(row)})`,
      "the purged dead letter to leave the page",
    );

    // Reload a plugin (admin): the swap answers and the page says so.
    await page.click('[data-reload="hello"]');
    await page.waitFor(
      `/reloaded hello/.test(document.querySelector("#toast")?.textContent ?? "")`,
      "the reload's answer on the page",
    );
    await page.screenshot(join(shots, "5-plugin-reloaded.png"));

    // Log out: the session is gone; the page sends us to sign in again.
    await page.click("#logout");
    await page.waitFor(on("/ui/login"), "the sign-in page after logout");
    assert.equal(
      await page.eval(`fetch("/api/v1/cluster").then((r) => r.status)`),
      401,
    );
    await page.goto(`${home.url}/ui/`);
    await page.waitFor(
      `!!document.querySelector("#sign-in") && !document.querySelector("#members")`,
      "the sign-in page at /ui/",
    );
    await page.screenshot(join(shots, "6-logged-out.png"));
    assert.deepEqual(
      page.problems,
      [],
      "no script errors, console errors or CSP violations",
    );
  } catch (err) {
    await page?.screenshot(join(shots, "failure.png")).catch(() => {});
    throw err;
  } finally {
    await browser.close();
    console.log(`  screenshots: ${shots}`);
  }
  // Ensure the dead node's eventual membership is seen as down by the survivor.
  await eventually(
    () => leaderOf(home),
    (l) => l !== null && l !== first,
    "the survivor to report the new leader",
  );
}

for (const b of BROWSERS) {
  const missing = await Deno.stat(b.executable).then(() => false, () => true);
  if (missing && !REQUIRED) {
    console.log(
      `console browser test ignored for ${b.name}: nothing at ${b.executable} (run: bash scripts/browser.sh)`,
    );
  }
  Deno.test({
    name:
      `console in ${b.name}: sign in through the OpenID provider, see the cluster, watch the leader change live, message an agent, replay and purge a dead letter, reload a plugin, log out`,
    ignore: missing && !REQUIRED,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      if (missing) {
        throw new Error(
          `${b.name} required (PLEXUS_REQUIRE_SERVICES=1) but missing at ${b.executable}; run: bash scripts/browser.sh`,
        );
      }
      await scenario(b.name, () => b.launch(b.executable));
    },
  });
}
