/**
 * Loading tandem.yaml: file, then YAML document, then a validated, normalized and deeply frozen
 * Config. Anything wrong becomes one TandemError: CONFIG_NOT_FOUND when the file cannot be read,
 * CONFIG_INVALID otherwise, listing every problem found, one per line, in file order.
 */

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Document, isNode, LineCounter, parseDocument, type YAMLError } from 'yaml';
import { TandemError } from '../core/errors.js';
import { type Config, formatPath, type Problem, sentences, validateConfig } from './schema.js';

/** The YAML mistakes people make in config files, and how to avoid each. */
const YAML_FIX =
  'Correct the YAML there: indent with spaces, not tabs; line up the keys of one mapping; and quote values ' +
  'that start with * & ! @ or ` or that contain ": " or " #" (for example tables: ["*"])';

/**
 * Reads and validates the config file `file` (relative to the working directory). Paths inside
 * the file are relative to the file's own folder. Messages name `file` as given, so they match
 * what the user typed.
 */
export function loadConfig(file: string): Config {
  const path = resolve(file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw unreadable(file, path, err as NodeJS.ErrnoException);
  }

  const lineCounter = new LineCounter();
  // Without prettyErrors, messages carry no excerpt of the file (which might hold a pasted secret).
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) {
    const lines = doc.errors.map((error) => {
      const { line, col } = lineCounter.linePos(error.pos[0]);
      return `${file}: line ${line}, column ${col}: ${yamlMessage(error)}`;
    });
    throw new TandemError('CONFIG_INVALID', lines.join('\n'), YAML_FIX);
  }

  let input: unknown;
  try {
    input = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new TandemError(
      'CONFIG_INVALID',
      `${file}: ${(err as Error).message}`,
      'Write the values out instead of repeating them through YAML aliases (*name)',
    );
  }

  const result = validateConfig(input, path);
  if (!result.ok) throw invalid(file, inFileOrder(result.problems, doc));
  return deepFreeze(result.config);
}

function unreadable(file: string, path: string, err: NodeJS.ErrnoException): TandemError {
  const reasons: Record<string, string> = {
    ENOENT: 'no such file',
    EISDIR: 'it is a folder, not a file',
    EACCES: 'permission denied',
  };
  const reason = (err.code && reasons[err.code]) ?? err.message;
  return new TandemError(
    'CONFIG_NOT_FOUND',
    `cannot read config file ${file}${file === path ? '' : ` (${path})`}: ${reason}${err.code ? ` (${err.code})` : ''}`,
    err.code === 'ENOENT'
      ? 'Check the path, or create the file: docs/config.md has a complete example'
      : 'Check that the path names a file this user can read',
  );
}

function yamlMessage(error: YAMLError): string {
  if (error.code === 'MULTIPLE_DOCS')
    return 'the file holds more than one YAML document ("---"); it must hold one';
  return error.message;
}

/** One problem: its line and its fix. Several: one line each, with its own fix, under a count. */
function invalid(file: string, problems: readonly Problem[]): TandemError {
  const describe = (p: Problem) =>
    `${file}: ${p.path.length > 0 ? `${formatPath(p.path)}: ` : ''}${p.message}`;
  const [only] = problems;
  if (problems.length === 1 && only) return new TandemError('CONFIG_INVALID', describe(only), only.fix);
  const lines = problems.map((p) => `  ${sentences(describe(p), p.fix)}`);
  return new TandemError(
    'CONFIG_INVALID',
    `${file} has ${problems.length} problems:\n${lines.join('\n')}`,
    'Fix each line above; docs/config.md describes every field',
  );
}

/** Problems sorted by where their field (or, for a missing field, its parent) starts in the file. */
function inFileOrder(problems: readonly Problem[], doc: Document): Problem[] {
  const offset = (path: Problem['path']): number => {
    for (let length = path.length; length > 0; length--) {
      const node = doc.getIn(path.slice(0, length), true);
      if (isNode(node) && node.range) return node.range[0];
    }
    return 0;
  };
  return problems
    .map((p) => ({ p, at: offset(p.path) }))
    .sort((a, b) => a.at - b.at)
    .map(({ p }) => p);
}

/** The config is shared by every part of a node; freezing it makes accidental edits fail loudly. */
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
