/**
 * Typed errors. Every error that can reach a user carries a stable `code`
 * so callers (and tests) can tell the cases apart without parsing text.
 */
export type DeferErrorCode =
  | 'E_CODEC' // a tensor body that cannot be decoded
  | 'E_ENVELOPE' // a message that is not a valid protocol envelope
  | 'E_TOO_LARGE' // a message or tensor over the configured limit
  | 'E_CUT' // an invalid cut point
  | 'E_MODEL' // a model that cannot be loaded or built
  | 'E_CONFIG' // bad configuration
  | 'E_BACKEND' // an engine that is not available
  | 'E_WEIGHTS' // weights that do not match their manifest
  | 'E_TIMEOUT' // something that did not happen in time
  | 'E_DEPLOY' // a deployment that failed
  | 'E_COMPUTE' // a node could not compute a frame (its reason in the message)
  | 'E_FRAME'; // a device's frame that cannot be served (see FrameError.kind)

export class DeferError extends Error {
  readonly code: DeferErrorCode;
  constructor(code: DeferErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'DeferError';
  }
}

export class CodecError extends DeferError {
  constructor(message: string, code: 'E_CODEC' | 'E_TOO_LARGE' = 'E_CODEC') {
    super(code, message);
    this.name = 'CodecError';
  }
}

export class EnvelopeError extends DeferError {
  constructor(message: string, code: 'E_ENVELOPE' | 'E_TOO_LARGE' = 'E_ENVELOPE') {
    super(code, message);
    this.name = 'EnvelopeError';
  }
}

export class CutError extends DeferError {
  readonly layer: string;
  readonly nearbyCuts: string[];
  constructor(layer: string, message: string, nearbyCuts: string[]) {
    super('E_CUT', message);
    this.name = 'CutError';
    this.layer = layer;
    this.nearbyCuts = nearbyCuts;
  }
}

/** Why a device's frame was not served: the `kind` goes back to the device in its error result. */
export type FrameErrorKind =
  | 'unknown-format' // neither JPEG, PNG, CBOR nor JSON
  | 'bad-image' // a JPEG or PNG that cannot be decoded, or too many pixels
  | 'bad-json' // JSON that does not parse or lacks shape and data
  | 'bad-cbor' // CBOR that does not decode or lacks a tensor
  | 'bad-tensor' // a tensor with the wrong shape, dtype or values
  | 'too-large' // over serve.maxFrameBytes
  | 'busy' // the policy is reject and the chain was full
  | 'dropped' // policy latest: a newer frame replaced it; policy queue: the device's queue was full
  | 'too-many-devices' // over serve.maxDevices
  | 'failed'; // the chain did not return a result

export class FrameError extends DeferError {
  constructor(
    readonly kind: FrameErrorKind,
    message: string,
  ) {
    super('E_FRAME', message);
    this.name = 'FrameError';
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
