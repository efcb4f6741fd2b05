import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { enumSql } from '../../src/adapters/postgres/user-types.js';

/** What PostgreSQL does with enumSql's statements, on a list of labels. */
function run(labels: string[], statements: string[]): string[] {
  const out = [...labels];
  for (const sql of statements) {
    const rename = /^ALTER TYPE t RENAME VALUE '(\w+)' TO '(\w+)'$/.exec(sql);
    if (rename) {
      const i = out.indexOf(rename[1]!);
      expect(i).toBeGreaterThanOrEqual(0);
      expect(out).not.toContain(rename[2]);
      out[i] = rename[2]!;
      continue;
    }
    const add = /^ALTER TYPE t ADD VALUE IF NOT EXISTS '(\w+)'(?: (BEFORE|AFTER) '(\w+)')?$/.exec(sql);
    expect(add, sql).not.toBeNull();
    const [, label, where, next] = add!;
    expect(out).not.toContain(label);
    if (!where) out.push(label!);
    else {
      const i = out.indexOf(next!);
      expect(i).toBeGreaterThanOrEqual(0);
      out.splice(where === 'AFTER' ? i + 1 : i, 0, label!);
    }
  }
  return out;
}

describe('enum labels on a backup', () => {
  it("end with the source's labels in the source's order, keeping the backup's others", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.constantFrom(...'abcdefghijklmnop'), { maxLength: 10 }),
        fc.array(fc.boolean(), { minLength: 10, maxLength: 10 }),
        fc.array(fc.tuple(fc.constantFrom('x', 'y', 'z'), fc.nat()), { maxLength: 2 }),
        (want, kept, extras) => {
          // The backup's enum: what it had of the source's labels, in the source's order, and
          // labels of its own (a label the source renamed since, or one added by hand).
          const have = want.filter((_, i) => kept[i]);
          for (const [label, at] of extras)
            if (!have.includes(label)) have.splice(at % (have.length + 1), 0, label);
          const statements = enumSql('t', have, want);
          const after = run(have, statements);
          expect(after.filter((l) => want.includes(l))).toEqual(want);
          const renamed = statements.some((s) => s.includes('RENAME'));
          const lost = have.filter((l) => !after.includes(l));
          expect(lost.length).toBe(renamed ? 1 : 0);
          if (renamed) expect(statements).toHaveLength(1);
        },
      ),
    );
  });

  it('renames one label changed in place, and adds around it otherwise', () => {
    expect(enumSql('t', ['sad', 'ok', 'happy'], ['sad', 'fine', 'happy'])).toEqual([
      "ALTER TYPE t RENAME VALUE 'ok' TO 'fine'",
    ]);
    expect(enumSql('t', ['s', 'm', 'l'], ['xs', 's', 'm', 'ml', 'l', 'xl'])).toEqual([
      "ALTER TYPE t ADD VALUE IF NOT EXISTS 'xs' BEFORE 's'",
      "ALTER TYPE t ADD VALUE IF NOT EXISTS 'ml' AFTER 'm'",
      "ALTER TYPE t ADD VALUE IF NOT EXISTS 'xl' AFTER 'l'",
    ]);
    expect(enumSql('t', [], ['a', 'b'])).toEqual([
      "ALTER TYPE t ADD VALUE IF NOT EXISTS 'a'",
      "ALTER TYPE t ADD VALUE IF NOT EXISTS 'b' AFTER 'a'",
    ]);
  });
});
