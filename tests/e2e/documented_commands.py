"""The shell commands that README.md and docs/*.md show in fenced code blocks.

A block counts when its info string is a shell (```bash, ```sh, ```shell, ```console, ...),
or when it has none and its first line starts with a command (log excerpts in bare blocks are
not commands). In ```console blocks only `$ ` lines are commands (the rest is output).
`\\` continues a line; `# comments` and a leading `$ ` are dropped; whitespace is collapsed, so
a command matches a table entry however the document wraps or aligns it. Nothing here depends
on line numbers or section names: the same command moved to another page is the same entry.
"""

import dataclasses
import os
import re

SHELL_LANGUAGES = {"bash", "sh", "shell", "zsh", "console", "shell-session", "shellsession"}
PROMPT_LANGUAGES = {"console", "shell-session", "shellsession"}
# A bare block is a command block if its first command starts with one of these (after any
# VAR=value assignments), or with a path (scripts/x.sh, ./x, .venv/bin/x).
COMMAND_WORDS = {"retrain", "label_image", "python", "python3", "pip", "pip3",
                 "bash", "sh", "sudo", "docker", "scripts", "tensorboard", "cd", "mkdir"}

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


@dataclasses.dataclass(frozen=True)
class DocCommand:
    """One documented command: `text` (normalized, one line) and the document it is in."""
    document: str
    text: str


def documents(repo_dir):
    """README.md and docs/**/*.md under repo_dir (paths relative to it), README first."""
    found = ["README.md"] if os.path.isfile(os.path.join(repo_dir, "README.md")) else []
    docs_dir = os.path.join(repo_dir, "docs")
    for folder, subfolders, files in os.walk(docs_dir):
        subfolders.sort()
        found.extend(os.path.relpath(os.path.join(folder, name), repo_dir)
                     for name in sorted(files) if name.endswith(".md"))
    return found


def collect(repo_dir):
    """Every documented command (list of DocCommand), in document order."""
    commands = []
    for document in documents(repo_dir):
        with open(os.path.join(repo_dir, document), encoding="utf-8") as markdown:
            commands.extend(DocCommand(document, text) for text in commands_in(markdown.read()))
    return commands


def commands_in(markdown):
    """The commands (list of str) in one Markdown text's shell code blocks."""
    commands = []
    for info, lines in fenced_blocks(markdown):
        language = info.lower()
        if language in PROMPT_LANGUAGES:
            lines = [line.strip()[2:] for line in lines if line.strip().startswith("$ ")]
        elif language not in SHELL_LANGUAGES and language != "":
            continue
        block = [command for command in join_lines(lines) if command]
        if language == "" and not (block and looks_like_command(block[0])):
            continue
        commands.extend(block)
    return commands


def fenced_blocks(markdown):
    """(info string, lines) of each fenced code block, indented ones (in lists) included."""
    blocks, opening, lines = [], None, []
    for line in markdown.splitlines():
        match = _FENCE.match(line)
        if opening is None:
            if match:
                opening, lines = match, []
            continue
        fence = opening.group("fence")
        if match and match.group("fence")[0] == fence[0] and len(match.group("fence")) >= len(
                fence) and not match.group("info"):
            blocks.append((opening.group("info"), lines))
            opening = None
        else:
            lines.append(line)
    return blocks


def join_lines(lines):
    """Shell lines with `\\` continuations joined, comments stripped and whitespace collapsed."""
    commands, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append(normalize(pending + line))
        pending = ""
    if pending:
        commands.append(normalize(pending))
    return commands


def normalize(command):
    """One command: a leading `$ ` and a trailing `# comment` dropped, whitespace collapsed."""
    command = strip_comment(command).strip()
    if command.startswith("$ "):
        command = command[2:]
    return " ".join(command.split())


def strip_comment(command):
    """command without its `# ...` comment (a # that starts a word outside quotes)."""
    quote = None
    for index, char in enumerate(command):
        if quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"':
                continue
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or command[index - 1].isspace()):
            return command[:index]
    return command


def looks_like_command(command):
    """Whether a line from a bare block starts with a program (True) or is output (False)."""
    words = command.split()
    while words and _ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return False
    first = words[0]
    return first in COMMAND_WORDS or "/" in first


def pattern_matches(pattern, command):
    """Whether a table entry matches a command: equal after normalizing, where `*` in the entry
    stands for any text (a placeholder such as a path)."""
    regex = ".*".join(re.escape(part) for part in normalize(pattern).split("*"))
    return re.fullmatch(regex, command) is not None
