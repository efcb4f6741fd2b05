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

  it('is a whole page whose refresh script parses', () => {
    const config = { cluster: 'prod<1>' } as Config;
    const page = dashboardPage(config, 'west', [nodeAnswer('east', [group({})])], new Date(0));
    expect(page).toContain('<title>Tandem · prod&#60;1&#62;</title>');
    const script = /<script>([\s\S]*)<\/script>/.exec(page)![1]!;
    expect(() => new Function(script)).not.toThrow();
    expect(script).toContain("fetch('/?part=body'");
  });
});
