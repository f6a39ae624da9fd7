// The API client: same-origin fetches with the Bearer key kept in sessionStorage.

const KEY_STORAGE = "lianfang.apiKey";

/** An API answer other than 2xx, with the documented error body's code and message. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The key of this browser tab's session (null when logged out). */
export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

/** The query string for params; arrays repeat the name, empty values are left out. */
export function queryString(params = {}) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    const values = Array.isArray(value) ? value : [value];
    for (const item of values) {
      if (item === undefined || item === null || item === "") continue;
      search.append(name, String(item));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/**
 * Calls the API; `onUnauthorized` runs on any 401 (the key was revoked or is wrong) before
 * the ApiError is thrown, so the page can go back to the login form.
 */
export class ApiClient {
  constructor({ key = storedKey(), onUnauthorized = () => {} } = {}) {
    this.key = key;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, { params, body } = {}) {
    const headers = { Accept: "application/json" };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path + queryString(params), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (error) {
      throw new ApiError(0, "network", error.message || "network error");
    }
    const text = await response.text();
    let payload = null;
    try {
      payload = text ? JSON.parse(text) : null;
    } catch {
      payload = null;
    }
    if (!response.ok) {
      const problem = payload && payload.error ? payload.error : {};
      const error = new ApiError(
        response.status,
        problem.code || "http_error",
        problem.message || response.statusText || `HTTP ${response.status}`,
        problem.details,
      );
      if (response.status === 401) this.onUnauthorized(error);
      throw error;
    }
    return payload;
  }

  get(path, params) {
    return this.request("GET", path, { params });
  }

  post(path, body) {
    return this.request("POST", path, { body });
  }

  patch(path, body) {
    return this.request("PATCH", path, { body });
  }
}
