/**
 * The field helpers every schema of src/api is written with (resources, traffic policy, mesh
 * files), so that a kind of field is declared, described and validated one way.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { DURATION_PATTERN } from '../core/duration.js';
import { DURATION_EXAMPLES } from './duration.js';

/** A duration: a string such as DURATION_EXAMPLES (durationAt turns it into ms). */
export const Duration = (description: string) => Type.String({ pattern: DURATION_PATTERN, description: `${description} A duration such as ${DURATION_EXAMPLES}.` });

/** One of a list of strings. */
export const Enum = <T extends readonly string[]>(values: T, description: string) => Type.Unsafe<T[number]>({ type: 'string', enum: [...values], description });

/** A percentage, 0..100. */
export const Percent = (description: string) => Type.Number({ minimum: 0, maximum: 100, description: `${description} Percent, 0..100.` });

/** An object that refuses fields it does not declare. */
export const Obj = <P extends Record<string, TSchema>>(props: P, description: string) => Type.Object(props, { additionalProperties: false, description });
