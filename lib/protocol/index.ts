/**
 * The wire protocol, in one place: topic names and their parser, and every
 * message with its encoder and validating decoder. Every role (broker,
 * dispatcher, node, device, Node-RED) speaks through this module; nothing
 * else spells a topic or builds a message. See docs/protocol.md.
 */

export * from './activation.js';
export * from './deployment.js';
export * from './device-frame.js';
export * from './device-result.js';
export * from './fields.js';
export * from './image-input.js';
export * from './lz4-gate.js';
export * from './names.js';
export * from './node-status.js';
export * from './reports.js';
export * from './tensor-codec.js';
export * from './topics.js';
export { ZFP_BITS, zfpAvailable, zfpCompress, zfpDecompress } from './zfp.js';
