/**
 * Secret references. tandem.yaml never holds a secret, only where to find it: `env:NAME` (an
 * environment variable) or `file:PATH` (a file; relative paths start at the config file's
 * folder). Loading checks the reference's syntax only; the value is read when it is used, by
 * `resolveSecret`, so a config can be loaded and inspected on a machine without the secret.
 *
 * A SecretRef holds the reference, never the value: printing it, logging it or JSON.stringify-ing
 * a config shows `env:NAME` / `file:/abs/path`. Errors name the reference and never the value.
 */

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { TandemError } from '../core/errors.js';
import { bad, ok, type Parsed } from './units.js';

/** Shorter shared secrets are too easy to guess offline from a captured handshake. */
export const MIN_SECRET_BYTES = 16;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const GENERATE = 'openssl rand -base64 32';

export class SecretRef {
  /** `env`: `source` is a variable name; `file`: `source` is an absolute path. */
  readonly kind: 'env' | 'file';
  readonly source: string;

  private constructor(kind: 'env' | 'file', source: string) {
    this.kind = kind;
    this.source = source;
  }

  /**
   * Parses `env:NAME` or `file:PATH`. A problem never repeats the text: a value that is not a
   * reference may well be the secret itself, pasted in by mistake.
   */
  static parse(value: unknown, baseDir: string): Parsed<SecretRef> {
    const hint = 'Put the secret in an environment variable or a file and refer to it';
    if (typeof value !== 'string') return bad('must be a secret reference, env:NAME or file:PATH', hint);
    if (value.startsWith('env:')) {
      const name = value.slice('env:'.length);
      if (ENV_NAME.test(name)) return ok(new SecretRef('env', name));
      return bad(
        '"env:" must be followed by a variable name (letters, digits and "_", not starting with a digit)',
      );
    }
    if (value.startsWith('file:')) {
      const path = value.slice('file:'.length);
      if (path.trim() !== '') return ok(new SecretRef('file', resolve(baseDir, path)));
      return bad('"file:" must be followed by a path');
    }
    return bad(
      'is not a secret reference (env:NAME or file:PATH); the secret itself must not be in the config',
      hint,
    );
  }

  /**
   * Reads the secret now. A file's trailing line breaks are dropped (`echo` and editors add one).
   * Throws SECRET_UNRESOLVED when the variable is unset, the file unreadable, or the value empty or
   * shorter than MIN_SECRET_BYTES.
   */
  resolve(env: NodeJS.ProcessEnv = process.env): string {
    const value = this.kind === 'env' ? this.#readEnv(env) : this.#readFile();
    if (value === '') throw this.#unresolved('is empty');
    if (Buffer.byteLength(value, 'utf8') < MIN_SECRET_BYTES) {
      throw this.#unresolved(`is shorter than ${MIN_SECRET_BYTES} bytes`, 'Use a longer random value');
    }
    return value;
  }

  toString(): string {
    return `${this.kind}:${this.source}`;
  }

  toJSON(): string {
    return this.toString();
  }

  #readEnv(env: NodeJS.ProcessEnv): string {
    const value = env[this.source];
    if (value === undefined) throw this.#unresolved(`is not set`);
    return value;
  }

  #readFile(): string {
    try {
      return readFileSync(this.source, 'utf8').replace(/[\r\n]+$/, '');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw this.#unresolved('does not exist', 'Create it');
      const reason =
        code === 'EISDIR' ? 'is a folder, not a file' : `cannot be read (${code ?? String(err)})`;
      throw this.#unresolved(reason, 'Make it a file readable by this user');
    }
  }

  /** The error for an unusable secret; `start` leads the fix, which goes on to say how to provide one. */
  #unresolved(problem: string, start?: string): TandemError {
    const rule = `the same value on every node, at least ${MIN_SECRET_BYTES} bytes`;
    const [subject, how] =
      this.kind === 'env'
        ? [
            `environment variable ${this.source}`,
            `${start ?? 'Set it'}: export ${this.source}=<secret> before starting tandem, ${rule} (generate one with ${GENERATE})`,
          ]
        : [
            `file ${this.source}`,
            `${start ?? 'Write the secret into it'}: ${rule}, e.g. ${GENERATE} > ${this.source} && chmod 600 ${this.source}, then copy the file to the other nodes`,
          ];
    return new TandemError('SECRET_UNRESOLVED', `secret ${this} (the ${subject}) ${problem}`, how);
  }
}

/** Reads a secret at the moment it is needed; see SecretRef.resolve. */
export function resolveSecret(ref: SecretRef, env: NodeJS.ProcessEnv = process.env): string {
  return ref.resolve(env);
}
