"""Judge prompt templates: Jinja2 files rendered in a sandbox, replaceable by the user.

A judge prompt ``NAME`` is made of ``NAME.user.jinja`` (required) and ``NAME.system.jinja`` (optional).
The built-in templates live in ``llmkick_tasks/judge/templates/``.  A directory given as
``--metadata '{"judge_templates": DIR}'`` or ``$LLMKICK_JUDGE_TEMPLATES`` is searched first, so a file
there with the same name replaces ours (and an empty ``NAME.system.jinja`` drops our system prompt).

Templates are rendered by Jinja2's ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: they see
only the variables passed in (plain strings), cannot reach Python internals, and a misspelled variable is
an error rather than silently empty text.  A replacement must ask for the same reply format as ours: the
parsers (``llmkick_tasks.judge.parsing``) do not change with the template.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmkick_tasks.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Iterable


BUILTIN_DIR = Path(__file__).parent / "templates"
USER_SUFFIX = ".user.jinja"
SYSTEM_SUFFIX = ".system.jinja"


class TemplateError(UserError):
    """A judge template is missing, does not compile, or does not render."""


class TemplateSet:
    """Renders judge prompts into OpenAI chat messages."""

    def __init__(self, user_dir: Path | None = None) -> None:
        self.user_dir = user_dir
        search = [str(user_dir)] if user_dir else []
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader([*search, str(BUILTIN_DIR)]),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # plain-text prompts, not HTML
            keep_trailing_newline=False,
        )

    def _get(self, filename: str) -> jinja2.Template | None:
        try:
            return self._env.get_template(filename)
        except jinja2.TemplateNotFound:
            return None
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(
                f"judge template {error.filename or filename} line {error.lineno}: {error}"
            ) from None

    def check(self, names: Iterable[str]) -> None:
        """Load (and compile) every template in ``names`` now, so a broken one fails before any work."""
        for name in names:
            if self._get(name + USER_SUFFIX) is None:
                raise TemplateError(f"judge template {name + USER_SUFFIX!r} not found in {self.searched()}")
            self._get(name + SYSTEM_SUFFIX)

    def files(self, name: str) -> list[Path]:
        """The files prompt ``name`` is read from (user, then system if any)."""
        found = []
        for suffix in (USER_SUFFIX, SYSTEM_SUFFIX):
            template = self._get(name + suffix)
            if template is not None and template.filename:
                found.append(Path(template.filename))
        return found

    def searched(self) -> str:
        """The directories searched, for error messages."""
        dirs = [str(self.user_dir)] if self.user_dir else []
        return " then ".join([*dirs, str(BUILTIN_DIR)])

    def messages(self, name: str, **variables: Any) -> list[dict[str, str]]:
        """Render prompt ``name`` with ``variables`` into ``[{"role": ..., "content": ...}, ...]``."""
        user = self._get(name + USER_SUFFIX)
        if user is None:
            raise TemplateError(f"judge template {name + USER_SUFFIX!r} not found in {self.searched()}")
        system = self._get(name + SYSTEM_SUFFIX)
        messages = []
        if system is not None:
            content = _render(system, name + SYSTEM_SUFFIX, variables).strip()
            if content:
                messages.append({"role": "system", "content": content})
        messages.append({"role": "user", "content": _render(user, name + USER_SUFFIX, variables).strip()})
        return messages


def _render(template: jinja2.Template, filename: str, variables: dict[str, Any]) -> str:
    """``template`` rendered; an undefined variable or a sandbox violation names the file and the problem."""
    try:
        return template.render(**variables)
    except jinja2.TemplateError as error:  # undefined variable, sandbox violation, ...
        where = template.filename or filename
        raise TemplateError(
            f"judge template {where} failed to render ({type(error).__name__}: {error}); "
            f"the variables it may use are {', '.join(sorted(variables))}"
        ) from error
