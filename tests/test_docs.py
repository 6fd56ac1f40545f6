"""Every guide's shell blocks run as a reader runs them, so a guide that stops working fails.

A guide is ``README.md`` or a page of ``docs/``. Its ```` ```bash ````, ```` ```sh ```` and
```` ```console ```` blocks run in the order of the page, as one ``bash -e -o pipefail``
session in a fresh temporary folder per guide: as in the reader's terminal, a block's
files, ``cd`` and variables hold in the next ones, and any failing command fails the guide
(naming its block). In a ``console`` block the lines starting with ``$ `` are the
commands; the others are their output, not checked. Python blocks are not run: a snippet
worth testing is written as a ``python - <<'EOF'`` shell block.

``atmospec`` is this checkout: a script in the folder's ``.bin/`` runs ``python -m
atmospec`` with the checkout first on ``PYTHONPATH`` (its ``data/`` and ``pipelines/``
too, whatever an installed atmospec maps ``atmospec.data`` to), and ``python``,
``pipetask``, ``butler``, ``bps`` are this interpreter's environment's. ``atmospec simulate
... --out DIR`` is served from a session cache when the same command (but ``--out``) ran
before: the simulator is deterministic and several guides start from the same small night.

**Blocks that must not run** are marked by an HTML comment on the line before the fence
(invisible on the rendered page), with the reason::

    <!-- no-test: needs a Dask cluster (HOST runs its scheduler) -->
    ```bash
    atmospec night RAWDIR --repo REPO --executor dask --scheduler tcp://HOST:8786
    ```

Use it sparingly: for synopses with placeholders (``RAW.fits``, ``REPO``), commands that
need what a test machine has not (a Dask cluster, a browser, the source checkout's test
data), or developer commands of the checkout. Every other block must run as written, and
small: a guide's examples simulate the least data that shows what the guide says.

**A guide that starts from what another makes** says so on a line of its own (an HTML
comment, invisible on the page): ``<!-- docs-test: continues README.md -->``. It is then
run after that guide, in the folder that guide left, as by a reader who read the two in
order: its commands that remake the same data (the same simulated night, the same night
run) find it made (the simulation is copied from the cache with the files' times, so the
night finds its raws unchanged and resumes), so the guides' shared example is reduced
once. The guides of one such chain are one test.

The test of each guide (or chain) is marked ``slow``, in an xdist group of its own, so
``-n auto`` spreads them. Its cost per block is printed (``-s``) and written to
``test_docs_costs.json`` in the session's temporary folder.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from atmospec.gen3 import gen3_available

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
#: Fence languages whose blocks are run.
SHELL = ("bash", "sh", "console")
#: The marker of a block that is not run, with its reason: ``<!-- no-test: REASON -->``.
NO_TEST = re.compile(r"<!--\s*no-test:\s*(?P<reason>.+?)\s*-->")
#: The marker of a guide run after another, in its folder (module docstring).
CONTINUES = re.compile(r"^<!--\s*docs-test:\s*continues\s+(?P<guide>\S+)\s*-->\s*$",
                       re.MULTILINE)
#: Guides that need the Gen3 extra.
NEEDS_GEN3 = {"docs/gen3.md"}
#: Longest a guide may run, s: a guard against a hang (the Gen3 guide takes ~10 min on a
#: loaded 2-core machine); the suite's budget is the real bound, keep guides small.
TIMEOUT_S = 1800


@dataclass(frozen=True)
class Block:
    """One fenced shell block of a guide."""

    guide: str
    line: int
    """Line of the opening fence (1-based)."""
    language: str
    script: str
    skip: str | None
    """The ``no-test`` reason, or None."""


def shell_blocks(text: str, guide: str = "") -> list[Block]:
    """The shell blocks of a Markdown page, in order.

    Parameters
    ----------
    text : str
        The page.
    guide : str
        Its name, for messages.

    Returns
    -------
    list of Block
    """
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(```+|~~~+)\s*([\w+-]*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        marker, language = fence.group(1), fence.group(2).lower()
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith(marker):
            body.append(lines[i])
            i += 1
        i += 1
        if language not in SHELL:
            continue
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = NO_TEST.search(before)
        if language == "console":
            body = [ln[2:] for ln in body if ln.startswith("$ ")]
        blocks.append(Block(guide, start + 1, language, "\n".join(body) + "\n",
                            mark.group("reason") if mark else None))
    return blocks


def test_shell_blocks_are_parsed():
    page = ("text\n```bash\necho a\n```\n\n<!-- no-test: a server -->\n\n```sh\nserve\n```\n"
            "```python\nprint()\n```\n```console\n$ echo b\nb\n```\n")
    blocks = shell_blocks(page)
    assert [(b.line, b.language, b.script, b.skip) for b in blocks] == [
        (2, "bash", "echo a\n", None), (8, "sh", "serve\n", "a server"),
        (14, "console", "echo b\n", None)]


def continued_guide(text: str) -> str | None:
    """The guide a page continues (``<!-- docs-test: continues GUIDE -->``), or None."""
    marks = CONTINUES.findall(text)
    if len(marks) > 1:
        raise ValueError(f"a guide continues one other guide, not {marks}")
    return marks[0] if marks else None


def guide_chains(guides: list[str], texts: dict[str, str]) -> list[tuple[str, ...]]:
    """The guides as chains run in one folder: each guide that continues none, followed by
    those that continue it (and theirs), in the order of ``guides``.

    Raises
    ------
    ValueError
        A guide continues one that is not in ``guides``, or guides continue each other in a
        circle.
    """
    after = {g: c for g in guides if (c := continued_guide(texts[g])) is not None}
    for g, c in after.items():
        if c not in guides:
            raise ValueError(f"{g} continues {c}, which is not a guide")
    chains: list[tuple[str, ...]] = []
    placed: set[str] = set()

    def follow(guide: str, chain: list[str]) -> None:
        chain.append(guide)
        placed.add(guide)
        for g in guides:
            if after.get(g) == guide:
                follow(g, chain)

    for head in (g for g in guides if g not in after):
        chain: list[str] = []
        follow(head, chain)
        chains.append(tuple(chain))
    if len(placed) != len(guides):
        raise ValueError(f"guides continue each other in a circle: {sorted(set(guides) - placed)}")
    return chains


CHAINS = guide_chains(GUIDES, {g: (ROOT / g).read_text() for g in GUIDES})


def test_guide_chains():
    texts = {"a.md": "", "b.md": "<!-- docs-test: continues a.md -->\n", "c.md": "",
             "d.md": "x\n<!-- docs-test: continues b.md -->\n",
             "e.md": "<!-- docs-test: continues a.md -->\n"}
    assert guide_chains(list(texts), texts) == [("a.md", "b.md", "d.md", "e.md"), ("c.md",)]
    with pytest.raises(ValueError, match="not a guide"):
        guide_chains(["b.md"], texts)
    circle = {"a.md": "<!-- docs-test: continues b.md -->\n",
              "b.md": "<!-- docs-test: continues a.md -->\n"}
    with pytest.raises(ValueError, match="circle"):
        guide_chains(list(circle), circle)
    # Every guide of the project is in exactly one chain.
    assert sorted(g for chain in CHAINS for g in chain) == sorted(GUIDES)


@pytest.mark.parametrize("guide", GUIDES)
def test_no_test_marks_give_a_reason(guide):
    """A skipped block says why; the other marks of the page are well formed."""
    text = (ROOT / guide).read_text()
    for line in text.splitlines():
        if "no-test" in line:
            assert NO_TEST.search(line), f"{guide}: malformed marker {line!r}"


#: The ``atmospec`` of the guides: ``python -m atmospec``, but ``atmospec simulate ... --out
#: DIR`` copies what the same command (same arguments but ``--out``) wrote earlier in the
#: session, if it did: the simulator is deterministic, and several guides start from the same
#: small night. The copies are taken under a lock, so two workers simulate a night once.
ATMOSPEC_SHIM = """
import fcntl, hashlib, json, os, shutil, subprocess, sys
from pathlib import Path

argv = sys.argv[1:]
cache = os.environ.get("ATMOSPEC_DOCS_SIM_CACHE")
if not (cache and argv[:1] == ["simulate"] and "--out" in argv[:-1]):
    os.execv(sys.executable, [sys.executable, "-m", "atmospec", *argv])
at = argv.index("--out")
out = argv[at + 1]
key = hashlib.sha256(json.dumps(argv[:at] + argv[at + 2:]).encode()).hexdigest()[:20]
entry = Path(cache) / key
entry.parent.mkdir(parents=True, exist_ok=True)
with open(f"{entry}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (entry / ".stdout").is_file():
        run = subprocess.run([sys.executable, "-m", "atmospec", *argv], check=False,
                             stdout=subprocess.PIPE, text=True)
        sys.stdout.write(run.stdout)
        if run.returncode != 0:
            sys.exit(run.returncode)
        shutil.copytree(out, f"{entry}.tmp")
        Path(f"{entry}.tmp", ".stdout").write_text(run.stdout.replace(out, "\\0"))
        os.rename(f"{entry}.tmp", entry)
        sys.exit(0)
shutil.copytree(entry, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".stdout"))
sys.stdout.write((entry / ".stdout").read_text().replace("\\0", out))
"""


def _sim_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's cache of simulated data (shared by the xdist workers of a session)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "docs-sim-cache"


def _environment(work: Path) -> dict[str, str]:
    """PATH, PYTHONPATH and the like for a guide's blocks (module docstring)."""
    bindir = work / ".bin"
    bindir.mkdir()
    # Scripts, not links: a link to a virtual environment's python is not in it.
    for name in ("python", "python3"):
        (bindir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (bindir / name).chmod(0o755)
    (bindir / "atmospec").write_text(f"#!{sys.executable}\n{ATMOSPEC_SHIM}")
    (bindir / "atmospec").chmod(0o755)
    # atmospec.data and atmospec.pipelines are folders beside the package (pyproject.toml):
    # an installed atmospec (an editable install of another checkout) may map them elsewhere.
    shim = work / ".site"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import importlib.util, sys\n"
        f"_MAP = {{'atmospec.data': {str(ROOT / 'data')!r}, "
        f"'atmospec.pipelines': {str(ROOT / 'pipelines')!r}}}\n"
        "class _Checkout:\n"
        "    @classmethod\n"
        "    def find_spec(cls, name, path=None, target=None):\n"
        "        where = _MAP.get(name)\n"
        "        if where is None:\n"
        "            return None\n"
        "        return importlib.util.spec_from_file_location(\n"
        "            name, where + '/__init__.py', submodule_search_locations=[where])\n"
        "sys.meta_path.insert(0, _Checkout)\n")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bindir), str(Path(sys.executable).parent),
                                   env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(ROOT)])
    env.setdefault("USER", "docs")
    # One BLAS thread per process: the guides' commands run beside other tests.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env.pop("PYTHONSTARTUP", None)
    return env


#: What the guide's script records before each block: its line, the wall clock and the CPU
#: time of the shell's finished children (``times``), in ``.docs-blocks``.
_MARK = ('__mark() { times > "$DOCS_MARKS.t"; printf "%s %s %s\\n" "$1" "$(date +%s.%N)" '
         '"$(tail -1 "$DOCS_MARKS.t")" >> "$DOCS_MARKS"; }\n')


def guide_script(blocks: list[Block]) -> str:
    """The guide as one shell session: its runnable blocks in order, each after a mark.

    One session, as in the reader's terminal: a ``cd`` or a variable of a block holds in
    the next ones.
    """
    parts = ["set -e -o pipefail\n", _MARK]
    for block in blocks:
        if block.skip is None:
            parts += [f"__mark {block.line}\n", block.script]
    parts.append("__mark end\n")
    return "".join(parts)


def _block_costs(marks: Path) -> list[tuple[int, float, float]]:
    """(line, wall s, CPU s) of each block that started, from the marks."""
    rows = []
    for line in marks.read_text().splitlines():
        where, clock, user, system = line.split()
        cpu = sum(float(m) * 60 + float(s) for m, s in
                  (v.rstrip("s").split("m") for v in (user, system)))
        rows.append((where, float(clock), cpu))
    return [(int(a[0]), b[1] - a[1], b[2] - a[2]) for a, b in itertools.pairwise(rows)]


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S)
@pytest.mark.parametrize("chain", [
    pytest.param(c, id="+".join(c), marks=pytest.mark.xdist_group(f"docs:{c[0]}"))
    for c in CHAINS])
def test_guide_runs(chain, tmp_path_factory):
    """Every shell block of each guide of ``chain`` runs, in order, exit status 0: the first
    guide in a fresh folder, each next one in the folder the previous left."""
    if set(chain) & NEEDS_GEN3 and not gen3_available():
        pytest.skip("the [gen3] extra is not installed")
    work = tmp_path_factory.mktemp(Path(chain[0]).stem)
    env = _environment(work)
    env["ATMOSPEC_DOCS_SIM_CACHE"] = str(_sim_cache(tmp_path_factory))
    try:
        for guide in chain:
            _run_guide(guide, work, env, tmp_path_factory)
    finally:
        shutil.rmtree(work, onerror=_writable_and_retry)


def _run_guide(guide: str, work: Path, env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run one guide's blocks as one shell session in ``work``; fail naming the block."""
    blocks = shell_blocks((ROOT / guide).read_text(), guide)
    marks = work / ".docs-blocks"
    marks.unlink(missing_ok=True)
    env = {**env, "DOCS_MARKS": str(marks)}
    costs: list[tuple[int, float, float]] = []
    try:
        run = subprocess.run(["bash", "-c", guide_script(blocks)], cwd=work, env=env,
                             capture_output=True, text=True, check=False, timeout=TIMEOUT_S)
        costs = _block_costs(marks) if marks.is_file() else []
        if run.returncode != 0:
            # The block that failed: the last one whose mark was written.
            last = marks.read_text().splitlines()[-1].split()[0] if marks.is_file() else ""
            block = next((b for b in blocks if str(b.line) == last), blocks[0])
            tail = "\n".join((run.stdout + run.stderr).splitlines()[-30:])
            pytest.fail(f"{guide}:{block.line}: the {block.language} block exits "
                        f"{run.returncode}:\n{block.script}\n--- output (tail) ---\n{tail}",
                        pytrace=False)
    finally:
        _record(guide, blocks, costs, tmp_path_factory)


def _record(guide: str, blocks: list[Block], costs: list[tuple[int, float, float]],
            tmp_path_factory: pytest.TempPathFactory) -> None:
    """Print the guide's cost per block and add it to ``test_docs_costs.json``."""
    wall = sum(c[1] for c in costs)
    cpu = sum(c[2] for c in costs)
    skipped = [b.line for b in blocks if b.skip is not None]
    print(f"\n{guide}: {wall:.0f} s wall, {cpu:.0f} s CPU over {len(costs)} blocks "
          f"({len(skipped)} marked no-test); " + ", ".join(
              f"line {line}: {w:.0f} s/{c:.0f} s CPU" for line, w, c in costs))
    record = tmp_path_factory.getbasetemp() / "test_docs_costs.json"
    done = json.loads(record.read_text()) if record.is_file() else {}
    done[guide] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "no_test": skipped,
                   "blocks": [{"line": line, "wall_s": round(w, 1), "cpu_s": round(c, 1)}
                              for line, w, c in costs]}
    record.write_text(json.dumps(done, indent=1))
    also = os.environ.get("ATMOSPEC_DOCS_COSTS")  # a file outside pytest's rotated folders
    if also:
        with open(also, "a") as f:
            f.write(json.dumps({guide: done[guide]}) + "\n")


def _writable_and_retry(function, path, excinfo) -> None:
    """``rmtree`` of a guide's folder: a read-only file or folder (a guide may make one to
    show a refusal) is made writable and removed."""
    os.chmod(path, stat.S_IRWXU)
    parent = os.path.dirname(path)
    os.chmod(parent, stat.S_IRWXU)
    function(path)
