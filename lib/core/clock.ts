/** Wall-clock milliseconds since the epoch, with sub-millisecond resolution (for hop timestamps across processes). */
export const now = (): number => performance.timeOrigin + performance.now();
