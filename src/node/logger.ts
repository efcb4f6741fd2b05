import pino, { type Logger } from 'pino';

/**
 * JSON logs (one object per line) on stdout; on a terminal, or with TANDEM_LOG_PRETTY=1,
 * the same records made readable by pino-pretty. TANDEM_LOG_LEVEL sets the level (default info).
 */
export function createLogger(bindings: Record<string, string>): Logger {
  const level = process.env.TANDEM_LOG_LEVEL ?? 'info';
  const pretty =
    process.env.TANDEM_LOG_PRETTY === '1' || (process.stdout.isTTY && process.env.TANDEM_LOG_PRETTY !== '0');
  if (pretty) {
    return pino({
      level,
      base: bindings,
      transport: { target: 'pino-pretty', options: { colorize: true, sync: true } },
    });
  }
  return pino({ level, base: bindings }, pino.destination({ sync: true }));
}
