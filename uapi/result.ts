/**
 * Decoders never throw on untrusted bytes: they return a DecodeResult, whose error a daemon can
 * log and answer (usually with HV_E_FAIL).
 */

export type DecodeErrorCode =
  | 'too-short'
  | 'bad-length'
  | 'unknown-operation'
  | 'unterminated-string'
  | 'invalid-utf8'
  | 'invalid-utf16'
  | 'invalid-field';

export interface DecodeError {
  readonly code: DecodeErrorCode;
  /** One sentence a person can act on, naming the struct and field. */
  readonly message: string;
  /** The C member designator concerned, when there is one. */
  readonly field?: string;
  /** The operation byte/word of the message, when it could be read. */
  readonly operation?: number;
}

export type DecodeResult<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: DecodeError };

export function ok<T>(value: T): DecodeResult<T> {
  return { ok: true, value };
}

export function fail<T = never>(
  code: DecodeErrorCode,
  message: string,
  extra: { field?: string; operation?: number } = {},
): DecodeResult<T> {
  return { ok: false, error: { code, message, ...extra } };
}

/** View any Uint8Array as a Buffer without copying. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
