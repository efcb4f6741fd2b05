import { expect, it } from 'vitest';
import { renderStatus } from '../../src/cli/status.js';
import type { Config } from '../../src/config/index.js';
import { groupStatus, nodeAnswer } from '../helpers/status.js';

it('tandem status says so when a primary cannot reach its quorum (no automatic failover)', () => {
  const render = (witness: string) =>
    renderStatus({ cluster: 'c' } as Config, [
      nodeAnswer('east', [groupStatus({ lease: { held: true, witness, backups: 1, validMs: 2000 } })]),
    ]);
  expect(render('unreachable')).toContain(
    'shop@east: the quorum (witness or etcd) does not answer: no automatic failover until it does; this primary keeps taking writes while every backup hears it',
  );
  expect(render('ok')).not.toContain('quorum');
});
