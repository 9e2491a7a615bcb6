/** The dashboard's stylesheet. @module */

/** `/ui/style.css`. */
export const STYLE_CSS =
  `:root { color-scheme: light dark; --fg: #1d232a; --bg: #f6f7f9; --card: #fff; --line: #d9dee5; --accent: #2b6cb0; --bad: #c53030; --warn: #b7791f; --ok: #2f855a; }
@media (prefers-color-scheme: dark) { :root { --fg: #e2e8f0; --bg: #14181d; --card: #1c2128; --line: #2d333b; --accent: #63b3ed; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 12px; align-items: center; padding: 8px 16px; background: var(--card); border-bottom: 1px solid var(--line); position: sticky; top: 0; }
header h1 { font-size: 18px; margin: 0; }
.grow { flex: 1; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; padding: 16px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 12px; overflow: auto; }
section h2 { margin: 0 0 8px; font-size: 15px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line); white-space: nowrap; }
.badge { padding: 1px 8px; border-radius: 10px; background: var(--line); font-size: 12px; }
.up, .healthy, .running, .live, .done, .completed, .consensus, .answered { color: var(--ok); }
.suspect, .degraded, .starting, .stopping, .retrying, .compensating, .compensated, .silent, .no-consensus { color: var(--warn); }
.down, .unhealthy, .failed, .unreachable, .error, .offline, .dead-lettered, .compensation-failed, .cancelled { color: var(--bad); }
td:has(.step), td:has(.turn) { white-space: normal; }
button, .button { font: inherit; padding: 3px 10px; border: 1px solid var(--accent); border-radius: 4px; background: transparent; color: var(--accent); cursor: pointer; text-decoration: none; }
input, select { font: inherit; padding: 3px 6px; }
form { margin: 6px 0; }
pre { max-height: 160px; overflow: auto; margin: 4px 0; }
#logs { font: 12px/1.35 ui-monospace, monospace; max-height: 320px; overflow: auto; margin: 0; padding-left: 0; list-style: none; }
#logs li { border-bottom: 1px solid var(--line); padding: 1px 0; white-space: pre-wrap; word-break: break-all; }
#chart { width: 100%; height: 160px; }
.legend .l1 { color: #3182ce; } .legend .l2 { color: #dd6b20; }
#toast { position: fixed; bottom: 12px; right: 12px; margin: 0; padding: 6px 12px; background: var(--card); border: 1px solid var(--line); border-radius: 4px; }
#toast:empty { display: none; }
body.login main { display: block; max-width: 520px; margin: 10vh auto; }
`;
