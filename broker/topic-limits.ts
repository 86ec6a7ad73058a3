/**
 * Per-topic payload limits of the embedded broker: a small map from topic
 * patterns under defer/<pipeline>/ (MQTT filters, + and #) to the largest
 * payload allowed there. The packet limit (broker.maxPacketBytes) bounds
 * everything; these bound the topics whose messages are small by design, so
 * that a client cannot fill a dispatcher or node with megabytes of status.
 */
import { DeferError } from '../lib/core/errors.js';
import { absoluteFilter, filterWithin, relativeFilter, ANY_PIPELINE as T } from '../lib/protocol/index.js';

/** pattern (relative to defer/<pipeline>/) -> bytes */
export type TopicLimits = Record<string, number>;

export const DEFAULT_TOPIC_LIMITS: TopicLimits = {
  [relativeFilter(T.framesAll)]: 16 * 1024 * 1024,
  [relativeFilter(T.nodeStatusAll)]: 64 * 1024,
  [relativeFilter(T.nodeAliveAll)]: 1024,
  [relativeFilter(T.errors)]: 16 * 1024,
  [relativeFilter(T.metricsAll)]: 1024 * 1024,
};

/** Check a limits map from the configuration; throws E_CONFIG naming the bad entry. */
export function checkTopicLimits(limits: unknown, key = 'broker.topicLimits'): TopicLimits {
  if (limits === null || typeof limits !== 'object' || Array.isArray(limits)) throw new DeferError('E_CONFIG', `${key} must be a map of topic patterns to byte limits, e.g. {"frames/+": 1048576}`);
  for (const [pattern, bytes] of Object.entries(limits)) {
    if (!/^[A-Za-z0-9_.+#/-]{1,256}$/.test(pattern) || pattern.startsWith('/') || /#./.test(pattern))
      throw new DeferError('E_CONFIG', `${key}: '${pattern}' is not a topic pattern under defer/<pipeline>/ (levels of letters, digits, _ . -, or + and a final #)`);
    if (typeof bytes !== 'number' || !Number.isInteger(bytes) || bytes < 0 || bytes > 268_435_455)
      throw new DeferError('E_CONFIG', `${key}: the limit of '${pattern}' must be an integer number of bytes from 0 to 268435455`);
  }
  return limits as TopicLimits;
}

/** The limit for `topic` (the smallest of the patterns it matches), or undefined. */
export function limitFor(limits: TopicLimits, topic: string): number | undefined {
  let best: number | undefined;
  for (const [pattern, bytes] of Object.entries(limits)) {
    if (filterWithin(topic, absoluteFilter(pattern)) && (best === undefined || bytes < best)) best = bytes;
  }
  return best;
}
