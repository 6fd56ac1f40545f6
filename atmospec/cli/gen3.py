"""``atmospec butler ...`` and ``atmospec bps submit ...``: the Gen3 commands.

Hooked into `atmospec.cli` by two calls, ``add_butler_parser(sub)`` and
``add_bps_parser(sub)``. This module imports no middleware at import time: the commands call
`atmospec.gen3.require_gen3` first, so without the ``gen3`` extra they fail with one line
and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from atmospec.errors import BadInputError

__all__ = ["add_bps_parser", "add_butler_parser", "bps_environment", "bps_submit",
           "local_resource"]


def add_butler_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``atmospec butler init|ingest|certify``.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subcommands of the ``atmospec`` parser.
    """
    p = sub.add_parser("butler", help="Gen3 Butler repository: create, ingest raws, certify "
                                      "calibrations (needs the [gen3] extra)")
    bsub = p.add_subparsers(dest="butler_command", required=True, metavar="COMMAND")

    q = bsub.add_parser("init", help="create a Butler repository for one instrument "
                                     "(SQLite registry; LATISS unless --instrument)")
    q.add_argument("repo", help="repository directory (created)")
    # The names of atmospec.gen3.instrument.INSTRUMENTS (not imported: it needs the extra).
    q.add_argument("--instrument", default=None,
                   choices=("LATISS", "LSSTCam", "LSSTComCam", "LSSTCamSim", "LSST-TS8"),
                   help="instrument of the repository (default LATISS; with --update, the "
                        "repository's own)")
    q.add_argument("--update", action="store_true",
                   help="on an existing repository: register what this atmospec version adds "
                        "(dataset types, instrument records), keeping everything else")
    q.set_defaults(func=_cmd_init)

    q = bsub.add_parser("ingest", help="ingest raw files of the repository's instrument as "
                                       "'raw' in <instrument>/raw/all (LATISS/raw/all)")
    q.add_argument("repo", help="repository directory")
    q.add_argument("raw", nargs="+", help="raw files or directories of raw files")
    q.add_argument("--transfer", default="auto",
                   choices=("auto", "direct", "copy", "move", "symlink", "relsymlink",
                            "hardlink", "link"),
                   help="how files enter the datastore (default auto: copied in)")
    q.set_defaults(func=_cmd_ingest)

    q = bsub.add_parser("certify", help="certify calibration products into "
                                        "<instrument>/calib with a validity range")
    q.add_argument("repo", help="repository directory")
    # The keys of atmospec.gen3.repo.CALIB_DATASET_TYPES (not imported: it needs the extra).
    q.add_argument("kind", choices=("bias", "dark", "flat", "ptc", "linearizer", "defects",
                                    "crosstalk"), help="product kind")
    q.add_argument("files", nargs="*",
                   help="product files to ingest and certify (atmospec calib ... outputs)")
    q.add_argument("--from-collection", metavar="COLL",
                   help="certify the products a pipeline wrote to this collection instead "
                   "(e.g. the -o collection of pipetask run cpBias.yaml)")
    q.add_argument("--begin", help="start of validity, ISO UTC (default: unbounded)")
    q.add_argument("--end", help="end of validity, ISO UTC (default: unbounded)")
    q.add_argument("--collection", default=None,
                   help="CALIBRATION collection (default <instrument>/calib: LATISS/calib)")
    q.add_argument("--force", action="store_true",
                   help="certify products whose verification failed (their .verify.json, or "
                   "the cp*Verify dataset of --from-collection), with a warning; without it "
                   "they are refused")
    q.set_defaults(func=_cmd_certify)


def add_bps_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``atmospec bps submit BPS.yaml [bps options]``.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subcommands of the ``atmospec`` parser.
    """
    p = sub.add_parser("bps", help="run a pipeline at scale with BPS (needs the [gen3] extra)")
    bsub = p.add_subparsers(dest="bps_command", required=True, metavar="COMMAND")
    q = bsub.add_parser(
        "submit", help="bps submit with CTRL_MPEXEC_DIR and DAF_BUTLER_DIR set to this "
        "environment (e.g. pipelines/gen3/bps_parsl_local.yaml -b REPO -p PIPELINE ...)")
    q.add_argument("config", help="BPS submit YAML: a file or a package resource, e.g. "
                   "resource://atmospec.pipelines/gen3/bps_parsl_local.yaml")
    q.add_argument("bps_args", nargs=argparse.REMAINDER,
                   help="further options of 'bps submit' (-b REPO -p PIPELINE -i IN -o OUT "
                   "-d QUERY ...)")
    q.set_defaults(func=_cmd_bps_submit)


def _cmd_init(args: argparse.Namespace) -> int:
    from atmospec.gen3 import require_gen3

    require_gen3()
    from atmospec.gen3.instrument import instrument_for
    from atmospec.gen3.repo import init_repo, open_butler, repo_instruments

    path = init_repo(args.repo, instrument=args.instrument, update=args.update)
    with open_butler(path) as butler:
        name = repo_instruments(butler)[0]
    detectors = instrument_for(name).detector_records()
    what = (f"detector {detectors[0]['id']} {detectors[0]['full_name']}" if len(detectors) == 1
            else f"{len(detectors)} detectors")
    print(f"{'updated' if args.update else 'created'} Butler repository {path} "
          f"(instrument {name}, {what})")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from atmospec.gen3 import require_gen3

    require_gen3()
    from atmospec.gen3.repo import RAW_COLLECTION, ingest_raws

    result = ingest_raws(args.repo, args.raw, transfer=args.transfer)
    for path, reason in result.rejected:
        print(f"atmospec: {path}: {reason}", file=sys.stderr)
    print(f"ingested {len(result.ingested)} raws into {result.run or RAW_COLLECTION} "
          f"({len(result.skipped)} already there, {len(result.rejected)} rejected)")
    return 2 if result.rejected else 0


def _cmd_certify(args: argparse.Namespace) -> int:
    from atmospec.gen3 import require_gen3

    require_gen3()
    from atmospec.gen3.repo import (
        certify_files,
        certify_run,
        open_butler,
        repo_calib_collection,
    )

    if bool(args.files) == bool(args.from_collection):
        raise BadInputError(None, "give either product FILES or --from-collection COLL")
    collection = args.collection
    if collection is None:
        with open_butler(args.repo) as butler:
            collection = repo_calib_collection(butler)
    if args.from_collection:
        refs = certify_run(args.repo, args.from_collection, [args.kind], begin=args.begin,
                           end=args.end, collection=collection, force=args.force)
    else:
        refs = certify_files(args.repo, args.kind, args.files, begin=args.begin,
                             end=args.end, collection=collection, force=args.force)
    span = f"{args.begin or '-inf'} .. {args.end or '+inf'}"
    print(f"certified {len(refs)} {args.kind} into {collection} (valid {span})")
    return 0


def bps_environment(environ: dict[str, str] | None = None,
                    cwd: str | Path | None = None) -> dict[str, str]:
    """Environment for ``bps``: ``CTRL_MPEXEC_DIR`` and ``DAF_BUTLER_DIR`` at this prefix.

    BPS runs ``${CTRL_MPEXEC_DIR}/bin/pipetask`` and ``${DAF_BUTLER_DIR}/bin/butler``
    (the layout of the LSST stack); in a pip-installed environment both scripts are in
    ``<sys.prefix>/bin``.

    Parameters
    ----------
    environ : dict, optional
        Starting environment (default ``os.environ``).
    cwd : path, optional
        Directory BPS will run in (default: the current one). ``PWD`` is set to it: BPS
        puts its ``submit/`` folder under ``${PWD}``, which a parent process's ``PWD`` would
        otherwise decide.

    Returns
    -------
    dict
        A copy with both variables set (existing values are kept), ``<prefix>/bin`` first
        on ``PATH`` and ``PWD`` set.
    """
    env = dict(os.environ if environ is None else environ)
    prefix = sys.prefix
    env.setdefault("CTRL_MPEXEC_DIR", prefix)
    env.setdefault("DAF_BUTLER_DIR", prefix)
    bindir = str(Path(prefix) / "bin")
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PWD"] = str(Path(cwd if cwd is not None else os.getcwd()).resolve())
    return env


def bps_submit(config: str | Path, bps_args: list[str] | None = None,
               cwd: str | Path | None = None) -> int:
    """Run ``bps submit CONFIG [bps_args]`` with `bps_environment`.

    Parameters
    ----------
    config : path or str
        BPS submit YAML: a file, or a package resource such as
        ``resource://atmospec.pipelines/gen3/bps_parsl_local.yaml`` (the one shipped with
        atmospec, whatever the folder; pipetask reads ``-p resource://...`` pipelines so too).
    bps_args : list of str, optional
        Further ``bps submit`` options.
    cwd : path, optional
        Working directory (BPS writes ``submit/`` there).

    Returns
    -------
    int
        Exit status of ``bps``.

    Raises
    ------
    BadInputError
        Missing extra, missing config file, or no ``bps``/``pipetask`` in the environment.
    """
    from atmospec.gen3 import require_gen3

    require_gen3()
    config = local_resource(config)
    if not Path(config).is_file():
        raise BadInputError(config, "no such BPS config file")
    env = bps_environment(cwd=cwd)
    for tool, var in (("pipetask", "CTRL_MPEXEC_DIR"), ("butler", "DAF_BUTLER_DIR")):
        if not (Path(env[var]) / "bin" / tool).is_file():
            raise BadInputError(None, f"no {tool} in ${var}/bin ({env[var]}/bin): install "
                                      "the [gen3] extra in this environment")
    bps = shutil.which("bps", path=env["PATH"])
    if bps is None:
        raise BadInputError(None, "no bps command: pip install 'atmospec[gen3]'")
    cmd = [bps, "submit", str(config), *(bps_args or [])]
    return subprocess.run(cmd, env=env, cwd=cwd, check=False).returncode


def local_resource(name: str | Path) -> str | Path:
    """The file of a ``resource://<package>/<path>`` name (a file installed with a Python
    package, as Rubin's ``lsst.resources`` spells it); any other name unchanged.

    Parameters
    ----------
    name : str or path
        A path, or ``resource://atmospec.pipelines/gen3/bps_parsl_local.yaml``.

    Returns
    -------
    str or path
        The local file's path for a resource, else ``name``.

    Raises
    ------
    BadInputError
        A resource whose package cannot be imported.
    """
    text = str(name)
    if not text.startswith("resource://"):
        return name
    from importlib.resources import files

    package, _, inner = text[len("resource://"):].partition("/")
    try:
        return str(files(package).joinpath(inner))
    except ModuleNotFoundError:
        raise BadInputError(text, f"no package {package!r}") from None


def _cmd_bps_submit(args: argparse.Namespace) -> int:
    return bps_submit(args.config, args.bps_args)
