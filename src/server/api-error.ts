/**
 * Errors as OpenAI's API reports them: an HTTP status and a body
 * `{ error: { message, type, param, code } }` that clients (the openai package among them) parse.
 * Every failure a client can cause becomes one of these; anything else is a 500 with the same shape.
 */
import { TachyonError } from "../errors.js";

export interface ApiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = "invalid_request_error",
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers, e.g. Retry-After. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 naming the request field at fault. */
export function invalidField(param: string, message: string, code = "invalid_value"): ApiError {
  return new ApiError(400, message, "invalid_request_error", param, code);
}

/** Seconds a client told "busy" should wait before retrying. */
const retryAfterSeconds = 1;

/** Any error thrown while serving a request, as the error the client sees. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof TachyonError) {
    switch (err.code) {
      case "busy":
        return new ApiError(429, err.message, "requests", null, "rate_limit_exceeded", {
          "retry-after": String(retryAfterSeconds),
        });
      case "unavailable":
        return new ApiError(503, err.message, "server_error", null, "service_unavailable");
      case "argument":
      case "tokenizer":
        return new ApiError(400, err.message);
    }
  }
  const fastifyError = err as { statusCode?: unknown; code?: unknown; message?: unknown };
  if (typeof fastifyError.statusCode === "number" && fastifyError.statusCode < 500) {
    return fromFastify(fastifyError.statusCode, String(fastifyError.code), String(fastifyError.message));
  }
  return new ApiError(
    500,
    `internal error: ${(err as Error)?.message ?? String(err)}`,
    "server_error",
    null,
    "internal_error",
  );
}

/** Errors Fastify raises before a handler runs (body parsing, limits), said the OpenAI way. */
function fromFastify(status: number, code: string, message: string): ApiError {
  switch (code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new ApiError(
        413,
        "the request body is larger than this server accepts (see tachyon serve --max-body-bytes)",
        "invalid_request_error",
        null,
        "request_too_large",
      );
    case "FST_ERR_CTP_INVALID_JSON_BODY":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new ApiError(
        400,
        `the request body is not valid JSON (${message})`,
        "invalid_request_error",
        null,
        "invalid_json",
      );
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new ApiError(
        415,
        "send the request body as JSON with 'Content-Type: application/json'",
        "invalid_request_error",
        null,
        "unsupported_media_type",
      );
  }
  return new ApiError(status, message);
}
