/**
 * The web dashboard (GET / on any node's admin address): the whole cluster as `tandem status`
 * shows it, asked of every other node's admin API by the node serving the page, as one HTML
 * table with its notes, refreshed every 2 s in place, and each primary's lag as a line over the
 * last 5 minutes (kept by the page: the nodes keep no history). Read-only: role changes stay with
 * the CLI and the POST routes, which a page anyone on the admin network can open should not
 * offer.
 *
 * One renderer for the page and its refreshes: the page's script asks for `/?part=body` and
 * swaps it in, so the page works (without refreshing) with scripts off; the script's own
 * drawing is the lag chart, from the `data-lag` of the primaries' rows.
 */

import { formatBytes, type NodeAnswer, statusTable } from '../cli/status.js';
import type { Config } from '../config/index.js';

const STYLE = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
.sub { color: #666; margin-bottom: 1em; }
table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px #0002; }
th, td { padding: .35em .7em; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
th { background: #f0f0f3; font-weight: 600; font-size: .9em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #b00020; font-weight: 600; }
.warn { color: #9a6700; font-weight: 600; }
.ok { color: #1a7f37; }
ul.notes { font-family: ui-monospace, monospace; font-size: .9em; white-space: pre; padding-left: 1.2em; }
.nodes { margin-top: 1.2em; color: #444; }
.nodes a { margin-right: .8em; }
#stale { display: none; }
.chart { margin-top: .8em; font-size: .9em; color: #444; }
.chart svg { display: block; background: #fff; box-shadow: 0 1px 2px #0002; }
.chart polyline { fill: none; stroke: #2563eb; stroke-width: 1.5; }
`;

const SCRIPT = `(() => {
const stale = document.getElementById('stale');
const charts = document.getElementById('charts');
const lagSeries = new Map();
const SAMPLES = 150;
// Each primary's row carries its lag: kept here across refreshes, drawn as a line per group.
function sample() {
  for (const tr of document.querySelectorAll('tr[data-lag]')) {
    const series = lagSeries.get(tr.dataset.key) ?? [];
    series.push(Number(tr.dataset.lag));
    if (series.length > SAMPLES) series.shift();
    lagSeries.set(tr.dataset.key, series);
  }
  charts.replaceChildren();
  const svgNs = 'http://www.w3.org/2000/svg';
  for (const [key, series] of lagSeries) {
    const max = Math.max(1, ...series);
    const box = document.createElement('div');
    box.className = 'chart';
    const label = document.createElement('div');
    label.textContent = key + ': lag over the last ' + series.length * 2 + ' s, now ' + series.at(-1) + ' ms, top of the scale ' + max + ' ms';
    const svg = document.createElementNS(svgNs, 'svg');
    svg.setAttribute('width', String(SAMPLES * 4));
    svg.setAttribute('height', '48');
    const line = document.createElementNS(svgNs, 'polyline');
    line.setAttribute('points', series.map((y, i) => i * 4 + ',' + (46 - (44 * y) / max)).join(' '));
    svg.append(line);
    box.append(label, svg);
    charts.append(box);
  }
}
sample();
setInterval(async () => {
  try {
    const r = await fetch('/?part=body', { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    document.getElementById('body').innerHTML = await r.text();
    stale.style.display = 'none';
    sample();
  } catch (e) {
    stale.textContent = 'this node stopped answering (' + e.message + '); showing its last answer';
    stale.style.display = 'block';
  }
}, 2000);
})();
`;

const NUMERIC = new Set(['EPOCH', 'CAPTURED', 'DURABLE@TARGET', 'APPLIED', 'LAG rec', 'LAG bytes', 'LAG ms']);

/** Text for HTML content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** How a cell reads at a glance: states that need someone, and states that are fine. */
function tone(column: string, value: string): string {
  if (column === 'STATE') {
    if (value === 'running') return 'ok';
    return value === 'UNREACHABLE' || value === 'failed' ? 'bad' : 'warn';
  }
  if (column === 'ROLE' && /FENCED|in-doubt|\?/.test(value)) return 'warn';
  if (column === 'MODE' && value.includes('DEGRADED')) return 'bad';
  if (column === 'LINK' && /down|connecting|waiting/.test(value)) return 'warn';
  return '';
}

/** The part that refreshes: the table, its notes, when it was asked. */
export function dashboardBody(answers: NodeAnswer[], at: Date): string {
  const { head, rows, notes } = statusTable(answers);
  const ROLE = head.indexOf('ROLE');
  const LAG_MS = head.indexOf('LAG ms');
  const cell = (column: string, value: string) => {
    const classes = [NUMERIC.has(column) ? 'num' : '', tone(column, value)].filter(Boolean).join(' ');
    return `<td${classes ? ` class="${classes}"` : ''}>${escapeHtml(value)}</td>`;
  };
  const table = [
    '<table>',
    `<tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr>`,
    ...rows.map((r) => {
      // A primary's row carries its lag for the page's chart (kept in the browser, see SCRIPT).
      const lag =
        r[ROLE] === 'primary'
          ? ` data-key="${escapeHtml(`${r[0]}@${r[1]}`)}" data-lag="${escapeHtml(r[LAG_MS]!)}"`
          : '';
      return `<tr${lag}>${r.map((v, i) => cell(head[i]!, v)).join('')}</tr>`;
    }),
    '</table>',
  ].join('\n');
  const list = notes.length
    ? `<ul class="notes">${notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('\n')}</ul>`
    : '';
  const nodes = answers
    .map((a) => {
      const s = a.status;
      const about = s
        ? `${s.version}, pid ${s.pid}, up ${Math.round(s.uptimeMs / 1000)} s`
        : `not answering: ${a.error ?? '?'}`;
      return `<div><a href="http://${escapeHtml(a.admin)}/">${escapeHtml(a.node)}</a> ${escapeHtml(about)} · <a href="http://${escapeHtml(a.admin)}/metrics">metrics</a> <a href="http://${escapeHtml(a.admin)}/status">status JSON</a></div>`;
    })
    .join('\n');
  const journals = answers
    .flatMap((a) =>
      (a.status?.groups ?? []).map((g) => {
        const r = g.rates;
        const rate = (v: number | null) => (v === null ? '-' : `${Math.round(v).toLocaleString('en-US')}/s`);
        return `<div>${escapeHtml(`${g.group}@${a.node}`)}: journal ${escapeHtml(formatBytes(g.journal.bytes))} in ${g.journal.segments} segment(s), positions ${g.journal.first}-${g.journal.last}; captured ${rate(r.capturedPerSec)}, applied ${rate(r.appliedPerSec)}, wire ${r.wireBytesPerSec === null ? '-' : `${escapeHtml(formatBytes(Math.round(r.wireBytesPerSec)))}/s`}</div>`;
      }),
    )
    .join('\n');
  return [
    table,
    list,
    `<div class="nodes">${journals}</div>`,
    `<div class="nodes">${nodes}</div>`,
    `<p class="sub">asked ${escapeHtml(at.toISOString())}</p>`,
  ].join('\n');
}

export function dashboardPage(config: Config, self: string, answers: NodeAnswer[], at: Date): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tandem · ${escapeHtml(config.cluster)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Tandem cluster ${escapeHtml(config.cluster)}</h1>
<div class="sub">served by node ${escapeHtml(self)}; refreshes every 2 s. Switchover, failover and the rest: the <code>tandem</code> command.</div>
<p id="stale" class="bad"></p>
<div id="body">
${dashboardBody(answers, at)}
</div>
<div id="charts"></div>
<script>${SCRIPT}</script>
</body>
</html>
`;
}
