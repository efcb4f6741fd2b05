/** A seed's cut held by a capture (CaptureCut in types.ts): its mark once known, and its end. */
export interface PendingCut {
  mark: bigint | null;
  /** Settles once: with the position, or with why the cut cannot end. */
  readonly done: Promise<number>;
  resolve(position: number): void;
  reject(err: Error): void;
}

export function pendingCut(): PendingCut {
  let resolve!: (position: number) => void;
  let reject!: (err: Error) => void;
  const done = new Promise<number>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A cut closed before anyone asked for its position is not an unhandled rejection.
  done.catch(() => {});
  return { mark: null, done, resolve, reject };
}
