"""Body shaping: built-in templates (slack, teams, discord, sheets) and inline templates.

A template is a JSON structure whose string leaves are Jinja2 templates, rendered one by one
in Jinja2's immutable sandbox, so the body is valid JSON whatever the data holds (no string
concatenation of JSON). A leaf that is a single expression (`"{{ data.userId }}"`) keeps the
expression's type: a number stays a number, a list stays a list.

The render context: `id`, `event`, `timestamp`, `data` (the envelope; for a batch, those of
its first event and `id` of the batch), `events` (the list of envelopes: one for a single
event, all of them for a batch) and `integration` (`id`, `name`). Helpers: the `summary`
filter (one human line per event), `facts(data)` (name/value pairs for cards) and
`rows(events)` (Google Sheets rows).
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

CONTEXT_NAMES = frozenset({"id", "event", "timestamp", "data", "events", "integration"})
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
MAX_FACT_VALUE_CHARS = 200
DISCORD_CONTENT_MAX_CHARS = 2000  # Discord refuses longer `content`
SLACK_TEXT_MAX_CHARS = 40000  # Slack truncates beyond this


class TemplateProblem(ValueError):
    """A template that does not compile or render; `where` is the leaf's path in the template."""

    def __init__(self, message: str, where: tuple[str | int, ...] = (), line: int | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.line = line


_SUMMARIES: dict[str, str] = {
    "user.registered": "New registration: {name} ({email})",
    "user.login": "Login: {name} ({userId})",
    "module.created": "New module {code} {name}",
    "module.updated": "Module {moduleId} {name} updated",
    "timetable.created": "Scheduled: {title} at {startsAt}",
    "timetable.updated": "Schedule changed: {title} at {startsAt}",
    "note.uploaded": "New study material: {title} ({fileName})",
    "lecturer.assigned": "{lecturerName} assigned to module {moduleName}",
    "grade.published": "Grade published for {studentId} in module {moduleId}: {grade}",
    "system.error": "System error: {message}",
    "settings.updated": "Settings changed by {updatedBy}",
    "test.reminder": "Reminder: {title} at {startsAt}",
    "assignment.reminder": "Reminder: {title} due {dueAt}",
    "integration.test": "Test message for integration {integrationId}",
    "integration.synced": "Integration {integrationId} synced (status {status})",
    "file.received": "New file {path}",
}


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def summary(envelope: Any) -> str:
    """One human line for an event, for chat messages."""
    if not isinstance(envelope, dict):
        return str(envelope)
    event = str(envelope.get("event", "event"))
    raw = envelope.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    pattern = _SUMMARIES.get(event)
    if pattern is None:
        return f"{event}: {json.dumps(data, sort_keys=True, default=str)[:500]}"
    return pattern.format_map(_Blank({k: v for k, v in data.items() if v is not None}))


def facts(data: Any) -> list[dict[str, str]]:
    """Name/value pairs of an event's top-level data fields, for Adaptive Card fact sets."""
    if not isinstance(data, dict):
        return []
    out = []
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out.append({"title": str(key), "value": text[:MAX_FACT_VALUE_CHARS]})
    return out


def rows(events: Any) -> list[list[Any]]:
    """Google Sheets `values.append` rows: timestamp, event, id, data as JSON."""
    if not isinstance(events, list):
        return []
    return [
        [e.get("timestamp"), e.get("event"), e.get("id"), json.dumps(e.get("data"), sort_keys=True)]
        for e in events
        if isinstance(e, dict)
    ]


BUILTIN_TEMPLATES: dict[str, Any] = {
    # Slack incoming webhooks answer 400 `no_text` without `text`.
    "slack": {"text": "{{ events | map('summary') | join('\\n') | truncate(" + str(SLACK_TEXT_MAX_CHARS) + ") }}"},
    # Teams incoming webhook / Workflows: a message with one Adaptive Card attachment.
    "teams": {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": "{{ event }}",
                            "weight": "Bolder",
                            "size": "Medium",
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": "{{ events | map('summary') | join('\\n') }}", "wrap": True},
                        {"type": "FactSet", "facts": "{{ facts(data) }}"},
                    ],
                },
            }
        ],
    },
    # Discord webhooks need `content` (or embeds), at most 2,000 characters.
    "discord": {
        "content": "{{ events | map('summary') | join('\\n') | truncate(" + str(DISCORD_CONTENT_MAX_CHARS) + ") }}",
        "allowed_mentions": {"parse": []},
    },
    # Sheets `spreadsheets.values.append`: a ValueRange with `values`, one row per event.
    "sheets": {"majorDimension": "ROWS", "values": "{{ rows(events) }}"},
}


# Bounds that keep a template from exhausting the daemon: templates come from pull requests,
# and bodies render on the event loop, so a render must end quickly whatever the data holds.
MAX_ARGUMENT_INT = 10_000  # a number passed to a method or filter (widths, counts, repeats)
MAX_RENDERED_CHARS = 1_000_000  # the text a body renders, all its strings together
# The static budget, checked by `reconciler validate`: a loop in a loop in a loop over a batch's
# events and their lists is already billions of steps.
MAX_LOOP_DEPTH = 2  # {% for %} inside {% for %}, never a third level
MAX_TEMPLATE_CHARS = 20_000  # one string of an inline template
# The runtime budget of one body: loop iterations and calls (methods, macros, filters)
# together, a call counting as CALL_STEPS (a macro call costs some twenty times a loop
# iteration) and a filter also one step per item of the lists and maps it is given.
MAX_RENDER_STEPS = 200_000
CALL_STEPS = 10
# What steps cannot see (a filter that serialises the whole data, in a loop) is bounded by
# time: a render stops once it has run this long, checked at every step.
MAX_RENDER_SECONDS = 2.0
_SIZED_FILTERS = ("center", "indent", "wordwrap", "format", "batch", "slice")


def _check_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ARGUMENT_INT:
            raise SecurityError(f"the number {value} is larger than templates allow ({MAX_ARGUMENT_INT:,})")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, plus limits on sizes: no "x" * 10**9, no "x".ljust(10**9)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if (
            operator == "*"
            and isinstance(left, int | str | list | tuple)
            and isinstance(right, int | str | list | tuple)
        ):
            size = _size(left) * _size(right)
            if size > MAX_RENDERED_CHARS:
                raise SecurityError("the template builds a value too large to send")
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise SecurityError("exponents in templates are limited to 64")
        if operator == "%" and isinstance(left, str):
            _check_arguments(tuple(right) if isinstance(right, tuple) else (right,), {})
            if any(int(n) > MAX_ARGUMENT_INT for n in re.findall(r"%[-+ #0]*(\d+)", left)):
                raise SecurityError("format widths in templates are limited")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_arguments(args, kwargs)
        if __obj is not _counted_iteration:
            _current_budget().step(CALL_STEPS)  # a macro calling itself has no loop to count
        return super().call(__context, __obj, *args, **kwargs)


class RenderBudgetExceeded(TemplateError):
    """A render that went over its budget of steps or of rendered text."""


class _Budget:
    """What one body's render has spent: steps (loop iterations, calls) and rendered text."""

    __slots__ = ("chars", "deadline", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.chars = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def step(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > MAX_RENDER_STEPS:
            raise RenderBudgetExceeded(
                f"it took more than {MAX_RENDER_STEPS:,} steps (loop iterations, calls and the items filters"
                " go through); loop over fewer items, nest fewer loops, or move filters out of loops"
            )
        if time.monotonic() > self.deadline:
            raise RenderBudgetExceeded(
                f"it ran for more than {MAX_RENDER_SECONDS:g} s; move filters over the whole data out of loops,"
                " or loop over fewer items"
            )

    def text(self, chars: int) -> None:
        self.chars += chars
        if self.chars > MAX_RENDERED_CHARS:
            raise RenderBudgetExceeded(f"it rendered more than {MAX_RENDERED_CHARS:,} characters")


# the budget of the render in progress; renders are synchronous, so one per context suffices
_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)
_COUNTED = "_counted_iteration"  # the global every {% for %} iterates through


def _current_budget() -> _Budget:
    budget = _BUDGET.get()
    # outside CompiledTemplate.render (never in the daemon), each loop gets a budget of its own
    return budget if budget is not None else _Budget()


def _counted_iteration(iterable: Iterable[Any]) -> Iterator[Any]:
    """What a {% for %} iterates: the same items, each one a step of the render's budget."""
    budget = _current_budget()
    for item in iterable:
        budget.step()
        yield item


def _size(value: Any) -> int:
    return value if isinstance(value, int) else len(value)


def _bounded(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps Jinja2's mark of filters that take the environment first
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(args[1:], kwargs)
        return function(*args, **kwargs)

    return wrapper


def _charged(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that pays for its call and for the items it is given before it runs: `sort` or
    `unique` over the data's lists inside two loops is work no loop iteration counts."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _current_budget().step(CALL_STEPS + _items_in(args))
        return function(*args, **kwargs)

    return wrapper


def _items_in(args: tuple[Any, ...]) -> int:
    """The items of the lists and maps among `args`, and of their strings in 64-character chunks."""
    items = 0
    for value in args:
        if isinstance(value, list | tuple | dict | set | frozenset):
            items += len(value)
        elif isinstance(value, str):
            items += len(value) // 64
    return items


def _environment() -> ImmutableSandboxedEnvironment:
    env = _BoundedSandbox(undefined=ChainableUndefined, autoescape=False)
    for name in _SIZED_FILTERS:
        env.filters[name] = _bounded(env.filters[name])
    # loops run over the events and their data; range() would let a template spin for hours,
    # and namespace() would let a loop grow one value by a copy of the data at every step
    for name in ("range", "lipsum", "cycler", "joiner", "namespace"):
        env.globals.pop(name, None)
    env.filters["summary"] = summary
    env.filters.update({name: _charged(function) for name, function in env.filters.items()})
    env.globals.update(facts=facts, rows=rows, summary=summary)
    return env


_ENV = _environment()
_GLOBALS = frozenset(_ENV.globals)
_ENV.globals[_COUNTED] = _counted_iteration  # not a name templates may use: added after _GLOBALS


@dataclass(frozen=True, eq=False)  # hashed by identity: holds dicts
class CompiledTemplate:
    """A template compiled once per applied generation; `render` gives a JSON value."""

    source: Any
    _render: Callable[[dict[str, Any]], Any]

    def render(self, context: dict[str, Any]) -> Any:
        token = _BUDGET.set(_Budget())
        try:
            return self._render(context)
        except RenderBudgetExceeded as exc:
            raise TemplateProblem(f"the template is over its render budget: {exc}") from None
        except SecurityError as exc:
            raise TemplateProblem(f"the template tried an unsafe operation: {exc}") from None
        except (RecursionError, MemoryError, OverflowError) as exc:
            raise TemplateProblem(f"the template is too large to render: {type(exc).__name__}") from None
        except TemplateError as exc:
            raise TemplateProblem(f"the template failed to render: {exc}") from None
        except Exception as exc:  # what the template did with the data: iterating a method, 1/0, ...
            raise TemplateProblem(f"the template failed to render: {type(exc).__name__}: {exc}") from None
        finally:
            _BUDGET.reset(token)


def compile_template(source: Any) -> CompiledTemplate:
    """Compile a built-in name or an inline JSON structure; TemplateProblem says where it fails."""
    if isinstance(source, str):
        if source not in BUILTIN_TEMPLATES:
            raise TemplateProblem(
                f"unknown built-in template {source!r}; built-ins are " + ", ".join(sorted(BUILTIN_TEMPLATES))
            )
        return CompiledTemplate(source, _compile_node(BUILTIN_TEMPLATES[source], ()))
    return CompiledTemplate(source, _compile_node(source, ()))


def _compile_node(node: Any, where: tuple[str | int, ...]) -> Callable[[dict[str, Any]], Any]:
    if isinstance(node, dict):
        parts = [(key, _compile_node(value, (*where, key))) for key, value in node.items()]
        return lambda ctx: {key: part(ctx) for key, part in parts}
    if isinstance(node, list):
        items = [_compile_node(value, (*where, i)) for i, value in enumerate(node)]
        return lambda ctx: [item(ctx) for item in items]
    if isinstance(node, str) and "{" in node:
        return _compile_leaf(node, where)
    return lambda ctx: node


def _compile_leaf(text: str, where: tuple[str | int, ...]) -> Callable[[dict[str, Any]], Any]:
    try:
        return _compile_leaf_unguarded(text, where)
    except RecursionError:
        raise TemplateProblem("the template is nested too deeply", where) from None


def _compile_leaf_unguarded(text: str, where: tuple[str | int, ...]) -> Callable[[dict[str, Any]], Any]:
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateProblem(
            f"the template string has {len(text):,} characters; the limit is {MAX_TEMPLATE_CHARS:,}", where
        )
    try:
        ast = _ENV.parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}", where, exc.lineno) from None
    _check_loops(ast, where)
    unknown = sorted(meta.find_undeclared_variables(ast) - CONTEXT_NAMES - _GLOBALS)
    if unknown:
        raise TemplateProblem(
            f"the template uses {', '.join(unknown)}, which a template cannot see; it has "
            + ", ".join(sorted(CONTEXT_NAMES)),
            where,
        )
    single = _SINGLE_EXPRESSION.match(text)
    if single and _is_one_output(ast):
        expression = _ENV.compile_expression(single.group("expr"), undefined_to_none=True)
        return lambda ctx: _jsonable(expression(**ctx))
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name(_COUNTED, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
    template = _ENV.from_string(ast)

    def render(ctx: dict[str, Any]) -> str:
        # piece by piece, so that a render over the size budget stops before it is all in memory
        budget = _current_budget()
        pieces = []
        for piece in template.generate(ctx):
            budget.text(len(piece))
            pieces.append(piece)
        return "".join(pieces)

    return render


def _check_loops(ast: nodes.Template, where: tuple[str | int, ...]) -> None:
    """The static budget: loops nest at most MAX_LOOP_DEPTH deep, and none is recursive (a
    recursive loop's inner calls iterate what the budget cannot see). A macro's (or a block's)
    loops count where it is called, on top of the loops around the call: a macro with a loop
    called inside two loops nests three deep."""
    _LoopDepth(ast, where).check()


class _LoopDepth:
    """How deep loops nest in one template, following calls of its macros and blocks by name.

    Sound without guessing what a call does: a macro (or block) with loops must be called by its
    name (`m()`, `{% call m() %}`, `self.b()`), never handed on as a value; when any macro or block
    has a loop, none may call itself; the body of a `{% call %}` counts as nested inside all of
    the called macro's loops (it runs where the macro calls `caller()`)."""

    def __init__(self, ast: nodes.Template, where: tuple[str | int, ...]) -> None:
        self.ast = ast
        self.where = where
        self.macros: dict[str, nodes.Macro] = {m.name: m for m in ast.find_all(nodes.Macro)}
        self.blocks: dict[str, nodes.Block] = {b.name: b for b in ast.find_all(nodes.Block)}
        self.looping = any(n.find(nodes.For) is not None for n in (*self.macros.values(), *self.blocks.values()))
        self.depths: dict[str, int] = {}
        self.entered: list[str] = []  # the macros whose depth is being worked out, outermost first

    def check(self) -> None:
        self.visit(self.ast, 0)

    def visit(self, node: nodes.Node, depth: int) -> int:
        """The deepest loop nesting under `node` entered at `depth`; raise when over the limit."""
        if isinstance(node, nodes.Macro):
            return depth  # its loops count where it is called
        if isinstance(node, nodes.For):
            if node.recursive:
                raise TemplateProblem(
                    "recursive loops are not allowed in templates; loop over the levels you need",
                    self.where,
                    node.lineno,
                )
            depth = self._within(depth + 1, node.lineno)
        elif isinstance(node, nodes.CallBlock):
            inside = self._called(node.call.node, depth, node.lineno)
            deepest = max((self.visit(child, inside) for child in node.body), default=inside)
            return max(deepest, self._arguments(node.call, depth))
        elif isinstance(node, nodes.Call):
            return max(self._called(node.node, depth, node.lineno), self._arguments(node, depth))
        elif (name := self._target(node)) is not None and self._depth_of(name, node.lineno):
            raise TemplateProblem(
                f"{name} has {{% for %}} loops, so it may only be called by its name, not passed on as a value"
                " (its loops could not be counted where it runs)",
                self.where,
                node.lineno,
            )
        return max((self.visit(child, depth) for child in node.iter_child_nodes()), default=depth)

    def _arguments(self, call: nodes.Call, depth: int) -> int:
        """The deepest nesting in a call's callee expression and arguments (a named macro aside)."""
        children = [c for c in call.iter_child_nodes() if not (c is call.node and self._target(c) is not None)]
        return max((self.visit(child, depth) for child in children), default=depth)

    def _target(self, node: nodes.Node) -> str | None:
        """The macro (`name`) or block (`self.name`) an expression names, if it names one."""
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in self.macros:
            return node.name
        if (
            isinstance(node, nodes.Getattr)
            and isinstance(node.node, nodes.Name)
            and node.node.name == "self"
            and node.attr in self.blocks
        ):
            return "self." + node.attr
        return None

    def _called(self, callee: nodes.Node, depth: int, lineno: int) -> int:
        """The depth a call of `callee` at `depth` reaches: its loops on top of `depth`."""
        name = self._target(callee)
        return depth if name is None else self._within(depth + self._depth_of(name, lineno), lineno, called=name)

    def _depth_of(self, name: str, lineno: int) -> int:
        """How deep the loops of macro `name` (or block `self.name`) nest, its own calls included."""
        if name in self.depths:
            return self.depths[name]
        if name in self.entered:
            if self.looping:
                raise TemplateProblem(
                    f"{name} calls itself, and this template's macros or blocks loop: loops in a recursion"
                    " nest without bound; loop over the levels you need",
                    self.where,
                    lineno,
                )
            return 0  # no macro or block loops: a recursion nests no loops (the step budget bounds it)
        self.entered.append(name)
        node = self.macros.get(name) or self.blocks[name.removeprefix("self.")]
        deepest = max((self.visit(child, 0) for child in node.body), default=0)
        self.entered.pop()
        self.depths[name] = deepest
        return deepest

    def _within(self, reached: int, lineno: int, called: str = "") -> int:
        if reached > MAX_LOOP_DEPTH:
            calls = f" (counting the loops of {called}, called here)" if called else ""
            raise TemplateProblem(
                f"{{% for %}} loops nest {reached} deep here{calls}; the limit is {MAX_LOOP_DEPTH}, as each"
                " level multiplies the work by its list's length",
                self.where,
                lineno,
            )
        return reached


def _is_one_output(ast: nodes.Template) -> bool:
    """`{{ a }} and {{ b }}` also matches the single-expression pattern; only one Output
    node holding one expression is really a single expression."""
    return (
        len(ast.body) == 1
        and isinstance(ast.body[0], nodes.Output)
        and len(ast.body[0].nodes) == 1
        and not isinstance(ast.body[0].nodes[0], nodes.TemplateData)
    )


def _jsonable(value: Any) -> Any:
    """Native values as JSON: Undefined becomes null, anything exotic its string."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ChainableUndefined):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def render_context(
    envelopes: list[dict[str, Any]],
    integration: dict[str, Any],
    batch_id: str | None = None,
) -> dict[str, Any]:
    first = envelopes[0] if envelopes else {}
    return {
        "id": batch_id or first.get("id"),
        "event": first.get("event"),
        "timestamp": first.get("timestamp"),
        "data": first.get("data"),
        "events": envelopes,
        "integration": integration,
    }
