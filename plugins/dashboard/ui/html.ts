/**
 * The dashboard's two HTML pages: the console and the sign-in page.
 *
 * @module
 */

const HEAD = (title: string) =>
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<link rel="stylesheet" href="/ui/style.css">
</head>`;

/** The console page; `app.js` fills it from the session, the API and the live socket. */
export const INDEX_HTML = `${HEAD("Plexus console")}
<body>
<header>
  <h1>Plexus</h1>
  <span id="node"></span>
  <span id="live" class="badge">connecting</span>
  <span class="grow"></span>
  <span id="who"></span>
  <button id="logout" type="button">Log out</button>
</header>
<main>
  <section id="cluster-view">
    <h2>Cluster</h2>
    <p>Leader <strong id="leader">?</strong> · epoch <strong id="epoch">?</strong> · consensus <strong id="consensus">?</strong></p>
    <table id="members"><thead><tr><th>node</th><th>address</th><th>membership</th><th>health</th><th>version</th><th>in flight</th><th>memory</th><th>last seen</th></tr></thead><tbody></tbody></table>
    <table id="consensus-detail"><thead></thead><tbody></tbody></table>
  </section>
  <section id="plugins-view">
    <h2>Plugins</h2>
    <table id="plugins"><thead><tr><th>name</th><th>version</th><th>kind</th><th>state</th><th>restarts</th><th>trust</th><th>permissions</th><th></th></tr></thead><tbody></tbody></table>
  </section>
  <section id="agents-view">
    <h2>Agents</h2>
    <table id="agents"><thead><tr><th>agent</th><th>roles</th><th>presence</th><th>channels</th><th>queued</th><th>last seen</th><th></th></tr></thead><tbody></tbody></table>
    <form id="agent-status"><input name="id" placeholder="agent id (did:key:…)" required> <button>Status</button></form>
    <pre id="agent-out"></pre>
    <form id="agent-send"><input name="id" placeholder="agent id" required> <input name="channel" placeholder="channel" required> <input name="message" placeholder="test message" required> <button>Send</button></form>
  </section>
  <section id="tasks-view">
    <h2>Tasks and queues</h2>
    <table id="queues"><thead><tr><th>queue</th><th>state</th><th>depth</th></tr></thead><tbody></tbody></table>
    <p id="oldest"></p>
    <h3>Dead letters <button id="purge-all" type="button" hidden>Purge all</button></h3>
    <table id="dead"><thead><tr><th>task</th><th>type</th><th>attempts</th><th>died</th><th>reason</th><th></th></tr></thead><tbody></tbody></table>
    <form id="task-get"><input name="id" placeholder="task id" required> <button>Look up</button></form>
    <pre id="task-out"></pre>
  </section>
  <section id="work-view">
    <h2>Sagas and debates</h2>
    <table id="sagas"><thead><tr><th>saga</th><th>name</th><th>state</th><th>steps</th><th>updated</th></tr></thead><tbody></tbody></table>
    <table id="debates"><thead><tr><th>debate</th><th>topic</th><th>state</th><th>round</th><th>consensus</th><th>turns (latest round)</th></tr></thead><tbody></tbody></table>
  </section>
  <section id="metrics-view">
    <h2>Metrics (last 5 minutes)</h2>
    <canvas id="chart" width="640" height="160"></canvas>
    <p class="legend"><span class="l1">resident memory <b id="now-rss"></b> MiB</span> <span class="l2">HTTP requests/s <b id="now-rate"></b></span></p>
  </section>
  <section id="logs-view">
    <h2>Live logs</h2>
    <form id="log-filter">
      <select name="level"><option value="">any level</option><option>debug</option><option>info</option><option>warn</option><option>error</option></select>
      <input name="plugin" placeholder="plugin">
      <input name="correlation" placeholder="correlation id">
    </form>
    <ol id="logs"></ol>
  </section>
</main>
<p id="toast" role="status"></p>
<script type="module" src="/ui/app.js"></script>
</body>
</html>
`;

const escape = (s: string) =>
  s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

/**
 * The sign-in page: a button to the provider when one is configured, the
 * `login-link` hint when links are on, and the reason of a refused login.
 *
 * @example Usage
 * ```ts
 * import { loginHtml } from "./html.ts";
 * import assert from "node:assert/strict";
 * const page = loginHtml({ provider: "id.example.com", links: false, error: "<b>no</b>" });
 * assert.ok(page.includes("&#60;b&#62;no"));
 * ```
 */
export function loginHtml(
  options: { provider?: string; links: boolean; error?: string },
): string {
  const parts = [`${HEAD("Sign in · Plexus")}
<body class="login">
<main>
<h1>Plexus console</h1>`];
  if (options.error) {
    parts.push(`<p id="error" class="error">${escape(options.error)}</p>`);
  }
  if (options.provider) {
    parts.push(
      `<p><a id="sign-in" class="button" href="/ui/auth/start">Sign in with ${
        escape(options.provider)
      }</a></p>`,
    );
  }
  if (options.links) {
    parts.push(
      `<p>No identity provider needed on a development node: run <code>deno run -A main.ts login-link</code> beside it and open the link it prints (one use, five minutes).</p>`,
    );
  }
  if (!options.provider && !options.links) {
    parts.push("<p>No way to sign in is configured on this node.</p>");
  }
  parts.push("</main>\n</body>\n</html>\n");
  return parts.join("\n");
}
