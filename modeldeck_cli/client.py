"""A small REST client: the base URL, the token, and errors in words (never a traceback)."""

from __future__ import annotations

from typing import Any

import httpx


class CLIError(Exception):
    """Something to tell the user, with the exit status."""

    def __init__(self, message: str, status: int = 1, http_status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.http_status = http_status  # the server's answer, when there was one
        self.detail = detail  # and its reason, as the server put it


def unreachable(url: str, exc: httpx.HTTPError) -> CLIError:
    """A transport failure in words: the address is wrong or the server is down, not a traceback."""
    if isinstance(exc, httpx.ConnectError):
        reason = "connection refused" if "refused" in str(exc).lower() else (str(exc) or "can't connect")
        return CLIError(f"{url} is unreachable ({reason}): check the server URL and that the server is up.")
    if isinstance(exc, httpx.TimeoutException):
        return CLIError(f"{url} did not answer in time.")
    return CLIError(f"Can't reach {url}: {exc}")


def not_the_api(url: str, response: httpx.Response) -> CLIError | None:
    """A body that is not JSON came from something else at that address: a web page (the
    console's, or the URL has a path), a proxy. Said as such rather than a JSONDecodeError
    traceback, or a page of HTML quoted as the error."""
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    if not response.content or "json" in kind:
        return None
    what = "a web page" if "html" in kind else (kind or "a body")
    return CLIError(
        f"{url} answered {response.status_code} with {what}, not the ModelDeck API's JSON: is it "
        "ModelDeck's address (no path after it)?",
        http_status=response.status_code,
    )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    return body_text(body)


def body_text(body: Any) -> str:
    """An error body in one line: its detail, else "field: message; …"."""
    if isinstance(body, dict):
        if "detail" in body and len(body) == 1:
            return str(body["detail"])
        parts = []
        for key, value in body.items():
            text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(text if key in ("detail", "non_field_errors") else f"{key}: {text}")
        return "; ".join(parts)
    return str(body)


class Client:
    def __init__(self, url: str, token: str = "", timeout: float = 30.0, organization: str = "") -> None:
        self.organization = organization  # the slug signed in to: deployments and models are looked up there
        if not url:
            raise CLIError("No ModelDeck URL: run `modeldeck login --url URL …` or set MODELDECK_URL.")
        if not url.startswith(("http://", "https://")):
            raise CLIError(f"{url!r} is not an http(s) URL.")
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "modeldeck-cli"}
        if token:
            headers["Authorization"] = f"Token {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise unreachable(self.url, exc) from None
        if (wrong := not_the_api(self.url, response)) is not None:
            raise wrong
        if response.status_code in ok:
            return response
        code, detail = response.status_code, _detail(response)
        if code == 401:
            raise CLIError(f"Not signed in ({detail}). Run `modeldeck login`.", http_status=code, detail=detail)
        if code == 403:
            raise CLIError(f"You lack the permission for this: {detail}", http_status=code, detail=detail)
        if code == 404:
            raise CLIError(f"Not found: {detail}", http_status=code, detail=detail)
        raise CLIError(f"{code}: {detail}", http_status=code, detail=detail)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: dict, *, ok: tuple[int, ...] = (200, 201)) -> httpx.Response:
        return self.request("POST", path, json=body, ok=ok)

    def list_all(self, path: str, **params: Any) -> list[dict]:
        """Every row of a paginated list (LimitOffset pages: follow `next`)."""
        page = self.get(path, **params)
        if isinstance(page, list):
            return page
        rows = list(page.get("results", []))
        while page.get("next"):
            nxt = page["next"]
            try:
                response = self.http.get(nxt)
            except httpx.HTTPError as exc:
                raise unreachable(self.url, exc) from None
            if (wrong := not_the_api(self.url, response)) is not None:
                raise wrong
            if response.status_code != 200:
                raise CLIError(f"{response.status_code}: {_detail(response)}")
            page = response.json()
            rows.extend(page.get("results", []))
        return rows
