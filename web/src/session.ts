/**
 * Who is signed in, to which project. The token lives in sessionStorage (gone with the tab) and is
 * only ever sent in the Authorization header; a sign-in link carries it in the URL fragment
 * (`/#token=…&project=…`), which browsers never send to the server, and the page removes it from
 * the address bar as soon as it has read it.
 */
const TOKEN_KEY = "batchExport.token";
const PROJECT_KEY = "batchExport.projectId";

export interface Session {
  token: string;
  projectId: string;
}

/** The token and project of a sign-in link, removed from the address bar and history. */
export function takeLinkCredentials(): Partial<Session> {
  const fragment = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  const token = fragment.get("token")?.trim();
  const projectId = (fragment.get("project") ?? fragment.get("projectId"))?.trim();
  if (token || projectId) history.replaceState(null, "", window.location.pathname + window.location.search);
  return { ...(token ? { token } : {}), ...(projectId ? { projectId } : {}) };
}

export function storedSession(): Partial<Session> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const projectId = localStorage.getItem(PROJECT_KEY);
  return { ...(token ? { token } : {}), ...(projectId ? { projectId } : {}) };
}

export function saveSession(session: Session): void {
  sessionStorage.setItem(TOKEN_KEY, session.token);
  localStorage.setItem(PROJECT_KEY, session.projectId);
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}
