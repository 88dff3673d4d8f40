"""libcst helpers the two codemods share: argument lists laid out like the call they
replace, the names a module binds, and the name under which it imports torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import libcst as cst
from libcst import MaybeSentinel

from allocaudit.auditor.analysis.factories import ArgSpec

NO_SPACE = cst.SimpleWhitespace("")


def arg_specs(args: Sequence[cst.Arg]) -> list[ArgSpec]:
    """A libcst argument list as the abstract one `factories.bind` reads."""
    specs = []
    for arg in args:
        if arg.star == "**":
            specs.append(ArgSpec("dstar"))
        elif arg.star == "*":
            specs.append(ArgSpec("star"))
        elif arg.keyword is not None:
            specs.append(ArgSpec("kw", arg.keyword.value))
        else:
            specs.append(ArgSpec("pos"))
    return specs


def keyword_arg(name: str, value: cst.BaseExpression) -> cst.Arg:
    return cst.Arg(value=value, keyword=cst.Name(name), equal=cst.AssignEqual(NO_SPACE, NO_SPACE))


def is_simple_reference(node: cst.BaseExpression) -> bool:
    """A name or an attribute chain of one (`x`, `self.w13`): cheap to evaluate twice."""
    while isinstance(node, cst.Attribute):
        node = node.value
    return isinstance(node, cst.Name) and not node.lpar


class _CommentCounter(cst.CSTVisitor):
    def __init__(self) -> None:
        self.count = 0

    def visit_Comment(self, node: cst.Comment) -> None:
        self.count += 1


def count_comments(node: cst.CSTNode) -> int:
    counter = _CommentCounter()
    node.visit(counter)
    return counter.count


def has_call(node: cst.CSTNode) -> bool:
    """Whether evaluating ``node`` may run code with effects (a call, await, yield, walrus)."""
    finder = _EffectFinder()
    node.visit(finder)
    return finder.found


class _EffectFinder(cst.CSTVisitor):
    def __init__(self) -> None:
        self.found = False

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, (cst.Call, cst.Await, cst.Yield, cst.NamedExpr)):
            self.found = True
        return not self.found


def _strip_comment(whitespace: cst.BaseParenthesizableWhitespace) -> cst.BaseParenthesizableWhitespace:
    if isinstance(whitespace, cst.ParenthesizedWhitespace):
        return whitespace.with_changes(first_line=cst.TrailingWhitespace(), empty_lines=[])
    return whitespace


def _has_comment(whitespace) -> bool:
    return isinstance(whitespace, cst.ParenthesizedWhitespace) and whitespace.first_line.comment is not None


def _breaks_line(whitespace) -> bool:
    return isinstance(whitespace, cst.ParenthesizedWhitespace)


@dataclass
class Item:
    """One argument of a rebuilt call; ``source`` is the argument of the original call it
    keeps the comma and trailing whitespace of (None for a generated one)."""

    arg: cst.Arg
    source: Optional[cst.Arg] = None


def arrange(items: list[Item], original: Sequence[cst.Arg], before_args: cst.BaseParenthesizableWhitespace) -> list[cst.Arg]:
    """Commas and whitespace for ``items``, following ``original``'s layout: generated
    arguments are separated as the original's were (one per line in a call written one
    per line), a kept argument keeps its comma and any comment after it, and the last
    argument keeps the original's trailing comma and the whitespace before `)`."""
    if not original:
        raise ValueError("no arguments to follow")
    last = original[-1]
    trailing: Union[cst.Comma, MaybeSentinel] = last.comma
    if len(original) > 1:
        separator = _strip_comment(original[0].comma.whitespace_after)
    else:
        separator = _strip_comment(before_args) if _breaks_line(before_args) else cst.SimpleWhitespace(" ")
    comma = cst.Comma(whitespace_before=NO_SPACE, whitespace_after=separator)
    arranged = []
    for position, item in enumerate(items):
        own = item.source.comma if item.source is not None else MaybeSentinel.DEFAULT
        after_arg = item.arg.whitespace_after_arg
        if position == len(items) - 1:
            closing = trailing.whitespace_after if isinstance(trailing, cst.Comma) else last.whitespace_after_arg
            if item.source is not last and isinstance(own, cst.Comma) and _has_comment(own.whitespace_after) and _breaks_line(closing):
                # A comment after this argument stays after it, before the closing `)`.
                new_comma = own.with_changes(whitespace_after=own.whitespace_after.with_changes(indent=closing.indent, last_line=closing.last_line))
                arranged.append(item.arg.with_changes(comma=new_comma, whitespace_after_arg=NO_SPACE))
                continue
            if isinstance(trailing, cst.Comma):
                new_comma = trailing.with_changes(whitespace_after=_strip_comment(trailing.whitespace_after))
            else:
                new_comma = MaybeSentinel.DEFAULT
            arranged.append(item.arg.with_changes(comma=new_comma, whitespace_after_arg=last.whitespace_after_arg))
            continue
        if isinstance(own, cst.Comma) and item.source is not last:
            new_comma = own
        elif isinstance(own, cst.Comma) and _breaks_line(own.whitespace_after) and _breaks_line(separator):
            # The original trailing comma, with its comment, now before another argument.
            new_comma = own.with_changes(
                whitespace_after=own.whitespace_after.with_changes(indent=separator.indent, last_line=separator.last_line)
            )
        else:
            new_comma = comma
        if _breaks_line(after_arg):
            after_arg = NO_SPACE
        arranged.append(item.arg.with_changes(comma=new_comma, whitespace_after_arg=after_arg))
    return arranged


class BoundNames(cst.CSTVisitor):
    """Every identifier a module binds or reads as a variable (not attribute names, not
    keyword-argument names): what a new name must not collide with."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        if not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                alias.visit(self)
        return False

    def visit_ImportAlias(self, node: cst.ImportAlias) -> bool:
        if node.asname is not None:
            node.asname.name.visit(self)
        else:
            head = node.name
            while isinstance(head, cst.Attribute):
                head = head.value
            head.visit(self)
        return False


def dotted(node: cst.BaseExpression) -> Optional[str]:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


def module_torch_name(module: cst.Module) -> Optional[str]:
    """The name a module-level `import torch` / `import torch as th` binds, if any."""
    for statement in module.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Import):
                for name in torch_import_names(small):
                    return name
    return None


def torch_import_names(node: cst.Import) -> list[str]:
    """The names an import statement binds to torch: `import torch [as th]`, `import torch.nn`."""
    names = []
    for alias in node.names:
        name = dotted(alias.name)
        if alias.asname is not None:
            if name == "torch" and isinstance(alias.asname.name, cst.Name):
                names.append(alias.asname.name.value)
        elif name == "torch" or (name or "").startswith("torch."):
            names.append("torch")
    return names


def _is_import_line(statement: cst.CSTNode) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and all(
        isinstance(small, (cst.Import, cst.ImportFrom)) for small in statement.body
    )


def _is_docstring(statement: cst.CSTNode) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and len(statement.body) == 1
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def insert_imports(module: cst.Module, lines: Sequence[str]) -> cst.Module:
    """Add import statements after the module docstring and the leading block of imports
    (`from __future__` ones included), where libcst's AddImportsVisitor puts them. Written
    by hand because AddImportsVisitor walks the whole module with matchers: 1.3 s for
    vLLM's 2,000-line fused_moe.py, against milliseconds for this."""
    return module.with_changes(body=insert_after_preamble(module.body, lines, module))


def insert_after_preamble(body: Sequence[cst.BaseStatement], lines: Sequence[str], module: cst.Module) -> list[cst.BaseStatement]:
    """``body`` (a module's or a function's) with ``lines`` after its docstring and leading imports."""
    body = list(body)
    position = 1 if body and _is_docstring(body[0]) else 0
    while position < len(body) and _is_import_line(body[position]):
        position += 1
    new = [cst.parse_statement(line + module.default_newline, config=module.config_for_parsing) for line in lines]
    return [*body[:position], *new, *body[position:]]


def remove_import_if_unused(module: cst.Module, module_name: str, name: str) -> cst.Module:
    """Drop `name` from the module-level `from module_name import ...` when nothing else
    reads it (the whole statement when it was the only name). Narrow on purpose, like
    insert_imports: RemoveImportsVisitor runs a full scope analysis of the module."""
    return module.with_changes(body=without_unused_import(module.body, module_name, name))


def without_unused_import(body: Sequence[cst.BaseStatement], module_name: str, name: str) -> list[cst.BaseStatement]:
    """``body`` (a module's or a function's) without `name` in its `from module_name import ...`
    statements, when nothing else in ``body`` reads it."""
    names = BoundNames()
    for statement in body:
        if not (_is_import_line(statement) and any(
            isinstance(s, cst.ImportFrom) and s.module is not None and dotted(s.module) == module_name for s in statement.body
        )):
            statement.visit(names)
    if name in names.names:
        return list(body)
    kept_body = []
    for statement in body:
        if _is_import_line(statement) and len(statement.body) == 1:
            small = statement.body[0]
            if isinstance(small, cst.ImportFrom) and small.module is not None and dotted(small.module) == module_name and not isinstance(small.names, cst.ImportStar):
                kept = [a for a in small.names if (a.asname.name.value if a.asname else dotted(a.name)) != name]
                if not kept:
                    continue
                if len(kept) != len(small.names):
                    kept[-1] = kept[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
                    statement = statement.with_changes(body=[small.with_changes(names=kept)])
        kept_body.append(statement)
    return kept_body
