"""Server-side pagination, sort and filter for console lists, kept in the URL (?q=&sort=&page=).

One list page reads a constant number of rows whatever the table holds: a COUNT and one slice.
Views pass a queryset and say which columns sort and which fields the search box matches;
templates render `console/htmx/list_tools.html` (search + filters), `{% sort_th %}` headers
and `console/htmx/pager.html`. (NetBox's `utilities/paginator.py` + table ordering, smaller.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.db.models import Q, QuerySet
from django.http import HttpRequest

PER_PAGE_CHOICES = (10, 25, 50, 100)
DEFAULT_PER_PAGE = 50


@dataclass
class ListFilter:
    """A select beside the search box: URL parameter `name`, `choices` [(value, label)], and
    how a chosen value narrows the queryset (default: `field=value`)."""

    name: str
    label: str
    choices: Sequence[tuple[str, str]]
    field: str = ""
    apply: Callable[[QuerySet, str], QuerySet] | None = None

    def narrow(self, qs: QuerySet, value: str) -> QuerySet:
        if self.apply is not None:
            return self.apply(qs, value)
        return qs.filter(**{self.field or self.name: value})


@dataclass
class Listing:
    """One page of a list, with what the templates need to keep sort/filter/page in links."""

    rows: list[Any]
    total: int
    page: int
    per_page: int
    sort: str
    query: str
    params: dict[str, str]
    filters: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""
    prefix: str = ""

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def first_index(self) -> int:
        return 0 if self.total == 0 else (self.page - 1) * self.per_page + 1

    @property
    def last_index(self) -> int:
        return min(self.total, self.page * self.per_page)

    @property
    def filtered(self) -> bool:
        return bool(self.query or any(f["value"] for f in self.filters))

    def url(self, **changes: Any) -> str:
        """This page's URL with some of this list's parameters changed (None drops one)."""
        params = dict(self.params)
        for name, value in changes.items():
            params[f"{self.prefix}{name}"] = value
        if str(params.get(f"{self.prefix}page")) == "1":
            params.pop(f"{self.prefix}page")
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        return f"{self.path}?{urlencode(clean)}" if clean else self.path

    def hidden_params(self) -> list[tuple[str, str]]:
        """Parameters the search form must carry along (sort, other lists' state), not its own."""
        own = {f"{self.prefix}q", f"{self.prefix}page"} | {f["name"] for f in self.filters}
        return [(k, v) for k, v in self.params.items() if k not in own]

    def previous_url(self) -> str:
        return self.url(page=self.page - 1)

    def next_url(self) -> str:
        return self.url(page=self.page + 1)

    def sort_url(self, key: str) -> str:
        """Clicking a header sorts by it, or flips the direction when it is the current sort."""
        new = f"-{key}" if self.sort == key else key
        return self.url(sort=new, page=None)

    def sort_state(self, key: str) -> str:
        if self.sort == key:
            return "asc"
        if self.sort == f"-{key}":
            return "desc"
        return ""


def _positive_int(value: str | None, default: int) -> int:
    try:
        number = int(value or "")
    except ValueError:
        return default
    return number if number > 0 else default


def ordering(sorts: dict[str, str | Sequence[str]], sort: str, *, tiebreak: str | None = "pk") -> list[str]:
    """The ORM ordering of a known sort key (`-key` reverses every term, the tiebreak too), for
    `list_query` and for REST lists that take the same `sort` values as their console page."""
    terms = sorts[sort.lstrip("-")]
    terms = [terms] if isinstance(terms, str) else list(terms)
    descending = sort.startswith("-")
    order_by = []
    for term in [*terms, *([tiebreak] if tiebreak else [])]:
        flipped = term[1:] if term.startswith("-") else f"-{term}"
        order_by.append(flipped if descending else term)
    return order_by


@dataclass
class ListQuery:
    """A list's rows as a request asks for them, filtered and sorted, before any COUNT or slice:
    `paginate`'s first half, which a poll can read a page of keys from in one query."""

    qs: QuerySet | None  # None when `paginate` reads its rows through a `fetch`
    order_by: list[str]
    page: int  # as asked; `paginate` moves a page past the end to the last one
    size: int
    sort: str
    query: str
    params: dict[str, str]  # the list's state for links, without the page
    filters: list[dict[str, Any]]
    narrowed: bool

    @property
    def start(self) -> int:
        return (self.page - 1) * self.size


def list_query(
    request: HttpRequest,
    queryset: QuerySet | None,
    *,
    sorts: dict[str, str | Sequence[str]],
    default_sort: str,
    search: Iterable[str | Callable[[str], Q]] = (),
    filters: Iterable[ListFilter] = (),
    per_page: int = DEFAULT_PER_PAGE,
    prefix: str = "",
    tiebreak: str | None = "pk",
    ignore: Iterable[str] = (),
) -> ListQuery:
    """Filter and sort `queryset` from the request's GET parameters (see `paginate`); `ignore`:
    parameters that are no list's state (a poll's own) and never ride along in links."""
    get = request.GET
    p = prefix
    own = {f"{p}q", f"{p}sort", f"{p}page", f"{p}per_page", *ignore}
    filters = tuple(filters)
    own |= {f"{p}{flt.name}" for flt in filters}
    # Other lists' parameters on the same page (e.g. the usage page's period) ride along.
    params: dict[str, str] = {k: v for k, v in get.items() if k not in own and v}
    query = (get.get(f"{p}q") or "").strip()[:200]
    sort = get.get(f"{p}sort") or default_sort
    if sort.lstrip("-") not in sorts:
        sort = default_sort
    size = _positive_int(get.get(f"{p}per_page"), per_page)
    if size not in PER_PAGE_CHOICES:
        size = per_page
    qs = queryset
    search = tuple(search)
    if query and search:
        condition = Q()
        for name in search:  # a field name, or a callable making the Q of its own match
            condition |= name(query) if callable(name) else Q(**{f"{name}__icontains": query})
        qs = qs.filter(condition)
    filter_state = []
    for flt in filters:
        value = get.get(f"{p}{flt.name}") or ""
        if value not in {str(v) for v, _ in flt.choices}:
            value = ""
        if value:
            qs = flt.narrow(qs, value)
            params[f"{p}{flt.name}"] = value
        filter_state.append(
            {"name": f"{p}{flt.name}", "label": flt.label, "choices": flt.choices, "value": value}
        )
    order_by = ordering(sorts, sort, tiebreak=tiebreak)
    if qs is not None:
        qs = qs.order_by(*order_by)
    if query:
        params[f"{p}q"] = query
    if sort != default_sort:
        params[f"{p}sort"] = sort
    if size != per_page:
        params[f"{p}per_page"] = str(size)
    narrowed = bool(query and search) or any(f["value"] for f in filter_state)
    return ListQuery(qs=qs, order_by=order_by, page=_positive_int(get.get(f"{p}page"), 1), size=size,
                     sort=sort, query=query, params=params, filters=filter_state, narrowed=narrowed)  # fmt: skip


def paginate(
    request: HttpRequest,
    queryset: QuerySet | None,
    *,
    sorts: dict[str, str | Sequence[str]],
    default_sort: str,
    search: Iterable[str | Callable[[str], Q]] = (),
    filters: Iterable[ListFilter] = (),
    per_page: int = DEFAULT_PER_PAGE,
    prefix: str = "",
    tiebreak: str | None = "pk",
    total: int | None = None,
    fetch: Callable[[list[str], int, int], tuple[list[Any], int]] | None = None,
    ignore: Iterable[str] = (),
) -> Listing:
    """Filter, sort and slice `queryset` from the request's GET parameters.

    `sorts` maps the URL's sort keys to ORM orderings; `-key` reverses. The primary key breaks
    ties, so pages never repeat or skip a row. An unknown sort, page or filter value is ignored
    (the list still renders) rather than answered with an error. `prefix` namespaces the
    parameters when two lists share one page (e.g. usage tables); `tiebreak=None` for
    aggregate rows (values().annotate()), whose sort keys must then be unique themselves.
    `total`: the row count when the caller knows it already (used only while no search or
    filter narrows the list: one COUNT less). `fetch(order_by, offset, limit) -> (rows, total)`
    reads a page of rows that are not a queryset (e.g. a grouped UNION in raw SQL) in one query;
    `queryset` is then unused. `ignore`: see `list_query`.
    """
    lq = list_query(request, queryset, sorts=sorts, default_sort=default_sort,
                    search=search, filters=filters, per_page=per_page, prefix=prefix, tiebreak=tiebreak,
                    ignore=ignore)  # fmt: skip
    size, page, params = lq.size, lq.page, lq.params
    if fetch is not None:
        rows, total = fetch(lq.order_by, (page - 1) * size, size)
        pages = max(1, -(-total // size))
        if page > pages:  # past the end: the last page, as for a queryset
            page = pages
            rows, total = fetch(lq.order_by, (page - 1) * size, size)
    else:
        total = lq.qs.count() if total is None or lq.narrowed else total
        pages = max(1, -(-total // size))
        page = min(page, pages)
        rows = _page_rows(queryset, lq.qs, tiebreak, (page - 1) * size, size)
    if page > 1:
        params[f"{prefix}page"] = str(page)
    return Listing(rows=rows, total=total, page=page, per_page=size, sort=lq.sort, query=lq.query,
                   params=params, filters=lq.filters, path=request.path, prefix=prefix)  # fmt: skip


def _page_rows(
    queryset: QuerySet, qs: QuerySet, tiebreak: str | None, start: int, size: int
) -> list:
    if tiebreak == "pk":
        # Two steps: the page's keys from a narrow sorted query (only the columns the filter and
        # sort need), then those rows whole. Sorting 10,000 rows with every select_related
        # join and JSON column attached was most of a list page's time.
        keys = list(qs.values_list("pk", flat=True)[start : start + size])
        found = {row.pk: row for row in queryset.filter(pk__in=keys).order_by()} if keys else {}
        return [found[k] for k in keys if k in found]
    return list(qs[start : start + size])
