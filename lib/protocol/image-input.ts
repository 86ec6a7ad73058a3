/**
 * How a model's image input is made from an encoded image (JPEG, PNG, ...):
 * size, channels, value range or mean/std, channel order, resize mode. The
 * dispatcher uses it to decode device frames; with a compact first hop it
 * travels in stage 0's assignment (`inputImage`) and that node decodes the
 * image itself. See docs/protocol.md#assignment.
 */
import { EnvelopeError } from '../core/errors.js';
import { arr, int, num, obj, str } from './fields.js';

export type ResizeMode = 'crop' | 'letterbox' | 'stretch';

export interface ImageInput {
  height: number;
  width: number;
  channels: 1 | 3;
  /** output = lo + (hi - lo) * pixel / 255, unless mean and std are given */
  range: [number, number];
  /** per channel, on the 0..1 scale: output = (pixel / 255 - mean) / std */
  mean?: number[];
  std?: number[];
  channelOrder: 'rgb' | 'bgr';
  resize: ResizeMode;
  /** letterbox padding, 0..255 gray */
  pad: number;
  /** images with more pixels than this are refused before decoding */
  maxPixels: number;
}

const RESIZE: readonly ResizeMode[] = ['crop', 'letterbox', 'stretch'];

/** An ImageInput, checked field by field (`W` names the message it is in). */
export function imageInputOf(value: unknown, W: string): ImageInput {
  const o = obj(value, `${W}: inputImage`);
  const X = `${W} inputImage`;
  const channels = int(o, 'channels', X, 1, 3);
  if (channels !== 1 && channels !== 3) throw new EnvelopeError(`${X}: channels must be 1 or 3`);
  const range = arr(o, 'range', X, 2).map((v, i) => num({ v }, 'v', `${X} range ${i}`));
  if (range.length !== 2) throw new EnvelopeError(`${X}: range must be [lo, hi]`);
  const nums = (key: string) => (o[key] === undefined ? undefined : arr(o, key, X, 4).map((v, i) => num({ v }, 'v', `${X} ${key} ${i}`)));
  const mean = nums('mean');
  const std = nums('std');
  if ((mean === undefined) !== (std === undefined) || std?.some((s) => s <= 0)) throw new EnvelopeError(`${X}: mean and std come together, std positive`);
  const channelOrder = str(o, 'channelOrder', X, 3);
  if (channelOrder !== 'rgb' && channelOrder !== 'bgr') throw new EnvelopeError(`${X}: channelOrder must be rgb or bgr`);
  const resize = str(o, 'resize', X, 16) as ResizeMode;
  if (!RESIZE.includes(resize)) throw new EnvelopeError(`${X}: resize must be one of ${RESIZE.join(', ')}`);
  return {
    height: int(o, 'height', X, 1, 16384),
    width: int(o, 'width', X, 1, 16384),
    channels,
    range: range as [number, number],
    ...(mean && std ? { mean, std } : {}),
    channelOrder,
    resize,
    pad: int(o, 'pad', X, 0, 255),
    maxPixels: int(o, 'maxPixels', X, 1),
  };
}
