/** The dashboard's HTML: what a node's status says, escaped; a script that parses. */
import { describe, expect, it } from 'vitest';
import { dashboardBody, dashboardPage, escapeHtml } from '../../src/admin/dashboard.js';
import type { Config } from '../../src/config/index.js';
import type { GroupStatus } from '../../src/node/status.js';
import { groupStatus, nodeAnswer } from '../helpers/status.js';

/** A sync primary with a backlog at the backup. */
const group = (over: Partial<GroupStatus>): GroupStatus =>
  groupStatus({
    mode: 'sync',
    epoch: 3,
    positions: { captured: 1200, journalDurable: 1200, durableAtTarget: 1190, applied: 1180 },
    rates: { capturedPerSec: 512.4, appliedPerSec: null, wireBytesPerSec: 20480 },
    journal: { first: 1, last: 1200, bytes: 3 * 1024 * 1024, segments: 2 },
    ...over,
  });

const link = (lagMs: number) => ({
  peer: 'west',
  state: 'streaming',
  lastError: null,
  durable: 1190,
  applied: 1180,
  lag: { records: 10, bytes: 1000, ms: lagMs },
  wire: { bytesOut: 0, bytesIn: 0 },
  rttMs: 0,
  seed: null,
  seeds: 0,
  lastSeed: null,
});

describe('dashboard', () => {
  it('escapes what it shows', () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe('&#60;a href=&#34;x&#34;&#62;&#39;&#38;&#39;&#60;/a&#62;');
    const html = dashboardBody(
      [
        nodeAnswer('east', [
          group({ state: 'failed', error: 'disk <script>alert(1)</script> full', degraded: true }),
        ]),
      ],
      new Date(0),
    );
    expect(html).not.toContain('<script>');
    expect(html).toContain('disk &#60;script&#62;alert(1)&#60;/script&#62; full');
    expect(html).toContain('<td class="bad">failed</td>');
    expect(html).toContain('<td class="bad">sync DEGRADED</td>');
  });

  it('shows positions, rates and the journal; unknown rates as -', () => {
    const html = dashboardBody([nodeAnswer('east', [group({})])], new Date(0));
    expect(html).toContain('<td class="num">1190</td>');
    expect(html).toContain(
      'shop@east: journal 3.0 MiB in 2 segment(s), positions 1-1200; captured 512/s, applied -, wire 20 KiB/s',
    );
    expect(html).toContain('0.1.0, pid 42, up 61 s');
    expect(html).toContain('asked 1970-01-01T00:00:00.000Z');
  });

  it("marks each primary's row with its lag, for the chart", () => {
    const backup = groupStatus({ role: 'backup', primary: 'east' });
    const html = dashboardBody(
      [nodeAnswer('east', [group({ links: [link(37)] })]), nodeAnswer('west', [backup])],
      new Date(0),
    );
    expect(html).toContain('<tr data-key="shop@east" data-lag="37">');
    expect(html.match(/data-lag/g)).toHaveLength(1);
  });

  it("draws each primary's lag from the rows the refreshes bring", async () => {
    const page = dashboardPage({ cluster: 'c' } as Config, 'east', [], new Date(0));
    const script = /<script>([\s\S]*)<\/script>/.exec(page)![1]!;
    // Just enough of a DOM for the script: the rows it reads, the elements it builds.
    const el = (tag: string) => {
      const e = {
        tag,
        attrs: {} as Record<string, string>,
        children: [] as unknown[],
        textContent: '',
        className: '',
        style: {},
        innerHTML: '',
        setAttribute: (k: string, v: string) => {
          e.attrs[k] = v;
        },
        append: (...c: unknown[]) => e.children.push(...c),
        replaceChildren: () => {
          e.children = [];
        },
      };
      return e;
    };
    const charts = el('div');
    let rows = [{ dataset: { key: 'shop@east', lag: '10' } }];
    const document = {
      getElementById: (id: string) => (id === 'charts' ? charts : el('div')),
      querySelectorAll: () => rows,
      createElement: el,
      createElementNS: (_ns: string, tag: string) => el(tag),
    };
    let tick: () => Promise<void> = async () => {};
    const setInterval = (f: () => Promise<void>) => {
      tick = f;
    };
    const fetch = async () => ({ ok: true, text: async () => '' });
    new Function('document', 'setInterval', 'fetch', script)(document, setInterval, fetch);
    rows = [{ dataset: { key: 'shop@east', lag: '30' } }];
    await tick();
    const chart = charts.children[0] as ReturnType<typeof el>;
    const [label, svg] = chart.children as ReturnType<typeof el>[];
    expect(label!.textContent).toBe('shop@east: lag over the last 4 s, now 30 ms, top of the scale 30 ms');
    const line = svg!.children[0] as ReturnType<typeof el>;
    expect(line.tag).toBe('polyline');
    expect(line.attrs.points).toBe(`0,${46 - (44 * 10) / 30} 4,2`);
  });

  it('is a whole page whose refresh script parses', () => {
    const config = { cluster: 'prod<1>' } as Config;
    const page = dashboardPage(config, 'west', [nodeAnswer('east', [group({})])], new Date(0));
    expect(page).toContain('<title>Tandem · prod&#60;1&#62;</title>');
    const script = /<script>([\s\S]*)<\/script>/.exec(page)![1]!;
    expect(() => new Function(script)).not.toThrow();
    expect(script).toContain("fetch('/?part=body'");
  });
});
