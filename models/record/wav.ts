/**
 * WAV audio as model inputs (wavefile): PCM of 8 to 32 bits, 32/64-bit float,
 * and A-law / mu-law / IMA ADPCM (decoded to 16-bit PCM by wavefile). Several
 * channels are averaged to mono. The signal is cut into frames of `frame`
 * samples every `hop` samples; a tail shorter than a frame is dropped (no
 * padding, so every frame is real audio).
 *
 * Values: by default floats in [-1, 1] (PCM divided by 2^(bits-1), 8-bit PCM
 * centred on 128), as librosa / torchaudio / tf.audio.decode_wav give. With
 * `pcm16` they keep int16 magnitudes (-32768..32767), which models fed by a
 * raw 16-bit microphone stream expect (openWakeWord's melspectrogram input,
 * for instance, is float32 of int16 range). An int16 model input always gets
 * int16 values.
 */
import wavefile from 'wavefile';
import { FormatError, InputMismatchError, UnsupportedModelError } from '../../keystore/errors.ts';
import { type TensorData } from '../../runtime/tensor.ts';
import { RecordOptionError } from './options.ts';
import { convert, fitShape, isDynamic, sampleDims, showDims, showInput, type InputSpec } from './spec.ts';

/** A decoded WAV: mono samples and what they came from. */
export interface Audio {
  rate: number;
  channels: number;
  /** wavefile's bit depth code: `8`, `16`, `24`, `32`, `32f`, `64`, or `16` after A-law/mu-law/ADPCM decoding. */
  bitDepth: string;
  /** Mono samples in [-1, 1], or int16 magnitudes with `pcm16`. */
  samples: Float64Array;
}

interface Fmt { audioFormat: number; numChannels: number; sampleRate: number; bitsPerSample: number }

const FORMATS: Record<number, string> = { 1: 'PCM', 3: 'IEEE float', 6: 'A-law', 7: 'mu-law', 0x11: 'IMA ADPCM', 0xfffe: 'extensible' };

/**
 * WAVE_FORMAT_EXTENSIBLE with the IEEE-float sub-format (what libsndfile and
 * ffmpeg write for float with more than two channels): wavefile takes its bit
 * depth from `bitsPerSample` alone and would read the floats as integers. The
 * copy returned says format 3 (IEEE float) in the fmt chunk, which wavefile reads.
 */
function plainFloatFormat(bytes: Uint8Array): Uint8Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 12; at + 8 <= bytes.byteLength; at += 8 + dv.getUint32(at + 4, true) + (dv.getUint32(at + 4, true) & 1)) {
    if (String.fromCharCode(...bytes.subarray(at, at + 4)) !== 'fmt ') continue;
    const out = new Uint8Array(bytes);
    new DataView(out.buffer).setUint16(at + 8, 3, true);
    return out;
  }
  return bytes;
}

function parseWav(bytes: Uint8Array, what: string): InstanceType<typeof wavefile.WaveFile> {
  try {
    return new wavefile.WaveFile(bytes);
  } catch (e) {
    throw new FormatError(`${what}: not a readable WAV file (${(e as Error).message})`, { cause: e });
  }
}

/** Decodes a WAV to mono. FormatError for a broken file or an encoding wavefile cannot decode. */
export function decodeWav(bytes: Uint8Array, what: string, pcm16 = false): Audio {
  let wav = parseWav(bytes, what);
  const ext = wav.fmt as Fmt & { subformat?: number[] };
  if (ext.audioFormat === 0xfffe && ext.subformat?.[0] === 3) wav = parseWav(plainFloatFormat(bytes), what);
  const fmt = wav.fmt as Fmt;
  if (!FORMATS[fmt.audioFormat]) {
    throw new FormatError(`${what}: WAV encoding 0x${fmt.audioFormat.toString(16)} is not one keylock reads; expected PCM, IEEE float, A-law, mu-law or IMA ADPCM (convert it, e.g. ffmpeg -i in.wav -c:a pcm_s16le out.wav)`);
  }
  try {
    if (wav.bitDepth === '8a') wav.fromALaw();
    else if (wav.bitDepth === '8m') wav.fromMuLaw();
    else if (wav.bitDepth === '4') wav.fromIMAADPCM();
  } catch (e) {
    throw new FormatError(`${what}: could not decode its ${FORMATS[fmt.audioFormat]} samples (${(e as Error).message})`, { cause: e });
  }
  const depth = wav.bitDepth;
  const float = depth === '32f' || depth === '64';
  const bits = float ? 0 : Number(depth);
  if (!float && !(bits >= 8 && bits <= 32)) throw new FormatError(`${what}: ${depth}-bit samples; expected 8 to 32-bit PCM or 32/64-bit float`);
  const chans = fmt.numChannels;
  const raw = wav.getSamples(true, Float64Array) as Float64Array; // interleaved
  const n = Math.floor(raw.length / chans);
  // One multiplier from file units to the output range; 8-bit PCM is unsigned around 128.
  const offset = bits === 8 ? 128 : 0;
  const unit = float ? (pcm16 ? 32768 : 1) : pcm16 ? 2 ** (16 - bits) : 2 ** -(bits - 1);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let c = 0; c < chans; c++) sum += raw[i * chans + c];
    let v = (sum / chans - offset) * unit;
    if (pcm16 && float) v = Math.min(32767, Math.max(-32768, v));
    out[i] = v;
  }
  return { rate: fmt.sampleRate, channels: chans, bitDepth: depth, samples: out };
}

/** Frame length, hop and the per-frame dims for `spec`. */
export interface Framing {
  frame: number;
  hop: number;
  dims: number[];
}

/**
 * Frame length from the model (its per-sample size) or `frame`, which must
 * agree with a static input and sizes a dynamic one ([1, N] takes N = frame).
 */
export function framing(spec: InputSpec, frame?: number, hop?: number): Framing {
  const target = sampleDims(spec);
  const dynamic = target.filter(isDynamic).length;
  let dims: number[] | undefined;
  if (dynamic === 0) {
    const size = (target as number[]).reduce((a, b) => a * b, 1);
    if (frame !== undefined && frame !== size) {
      throw new InputMismatchError(`--frame ${frame} cannot fill ${showInput(spec)}: it takes ${size} samples per frame; expected --frame ${size} or no --frame`);
    }
    dims = fitShape([size], target);
    frame = size;
  } else {
    if (frame === undefined) throw new RecordOptionError(`${showInput(spec)} has a dynamic length; say how many samples a frame has`, 'give --frame N (and --hop H for overlapping frames)');
    dims = fitShape([frame], target);
  }
  if (!dims) throw new UnsupportedModelError(`${showInput(spec)}: a frame of ${frame} audio samples cannot fill ${showDims(target)}; expected an input like [1,N] or [N]`);
  return { frame, hop: hop ?? frame, dims };
}

/** Frames of one decoded file, as samples of `spec`. InputMismatchError when the audio is shorter than one frame. */
export function wavFrames(audio: Audio, spec: InputSpec, f: Framing, what: string): TensorData[] {
  const len = audio.samples.length;
  if (len < f.frame) {
    throw new InputMismatchError(`${what} has ${len} samples (${(len / audio.rate).toFixed(3)} s at ${audio.rate} Hz); a frame needs ${f.frame}`);
  }
  const count = Math.floor((len - f.frame) / f.hop) + 1;
  const out: TensorData[] = [];
  const integer = spec.dtype !== 'float32' && spec.dtype !== 'float64';
  for (let k = 0; k < count; k++) {
    let s = audio.samples.subarray(k * f.hop, k * f.hop + f.frame);
    if (integer) s = s.map(Math.round);
    out.push({ dtype: spec.dtype, dims: [...f.dims], data: convert(s, 'float64', spec.dtype, `${what} frame ${k}`) });
  }
  return out;
}
