"""`medannot serve`, `medannot worker` and `medannot admin …`: the task-queue server (``medannotassist_server``).

The first user of a new server is made with ``medannot admin create-user NAME --site-admin``: a site
admin creates projects and users over the API and is admin of every project. Admin commands work on
the database directly (SQLite in ``--data-dir`` or ``--database-url``) and migrate it first.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import EXIT_INVALID


def _database_options(parser) -> None:
    parser.add_argument("--data-dir", type=Path, help="server data directory (SQLite database and blobs)")
    parser.add_argument("--database-url", help="postgresql://user@host:port/db instead of SQLite in --data-dir")
    parser.add_argument(
        "--audit-key-file", help="the audit chain's key (default DATA_DIR/audit.key, made on first start)"
    )
    parser.add_argument(
        "--audit-checkpoint-file", help="signed audit checkpoints (default DATA_DIR/audit-checkpoints.jsonl)"
    )


def _dask_option(parser) -> None:
    parser.add_argument(
        "--dask-scheduler", metavar="ADDRESS", help="compute consensus on this Dask cluster (tcp://host:8786)"
    )


def _settings(args):
    from medannotassist_server.settings import Settings

    if getattr(args, "max_upload_mb", None) is not None:
        args.max_upload_bytes = int(args.max_upload_mb * 1024 * 1024)
    if getattr(args, "max_image_mb", None) is not None:
        args.max_image_bytes = int(args.max_image_mb * 1024 * 1024)
    return Settings.from_args(args)


def _admin_call(function, *args, **kwargs):
    """Run an admin function; a refusal, or a missing or wrong audit key, is printed as one line and exits 2."""
    from medannotassist_server.audit_keys import AuditKeyError
    from medannotassist_server.errors import ApiError

    try:
        return function(*args, **kwargs), 0
    except ApiError as error:
        print(f"error: {error.message}", file=sys.stderr)
    except AuditKeyError as error:
        print(f"error: {error}", file=sys.stderr)
    return None, EXIT_INVALID


def cmd_serve(args) -> int:
    from medannotassist_server.app import serve
    from medannotassist_server.settings import RemoteHostRefusedError

    try:
        return _admin_call(serve, _settings(args))[1]
    except RemoteHostRefusedError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID


def cmd_worker(args) -> int:
    from medannotassist_server.worker import run_worker

    return _admin_call(run_worker, _settings(args), burst=args.burst)[1]


def cmd_create_user(args) -> int:
    from medannotassist_server.admin import add_user

    token, status = _admin_call(add_user, _settings(args), args.name, args.email, args.site_admin, args.expires_in_s)
    if status == 0:
        print(token)
        print(
            f"created user {args.name}{' (site admin)' if args.site_admin else ''}; the token is shown once",
            file=sys.stderr,
        )
    return status


def cmd_grant(args) -> int:
    from medannotassist_server.admin import grant_role

    roles, status = _admin_call(grant_role, _settings(args), args.name, args.project, args.role)
    if status == 0:
        print(f"{args.name} in {args.project}: {', '.join(roles)}")
    return status


def cmd_revoke(args) -> int:
    from medannotassist_server.admin import revoke

    count, status = _admin_call(revoke, _settings(args), args.name)
    if status == 0:
        print(f"revoked {count} token(s) of {args.name}")
    return status


def cmd_verify_audit(args) -> int:
    """Exit 0: intact; 1: tampered (each problem on a line); 2: the key is missing or not the chain's."""
    from medannotassist_server.admin import verify_audit

    result, status = _admin_call(verify_audit, _settings(args), args.anchor, export=getattr(args, "export", False))
    if status:
        return status
    verdict, checkpoints = result
    if verdict.key_problem:
        print(f"error: {verdict.message}", file=sys.stderr)
        return EXIT_INVALID
    if not verdict.ok:
        for problem in verdict.problems:
            print(problem, file=sys.stderr)
        return 1
    print(verdict.message, file=sys.stderr if checkpoints else sys.stdout)
    for checkpoint in checkpoints:  # one line per chain: the server-wide one, then each project's
        print(checkpoint.line(), end="")
    return 0


def add_commands(commands) -> None:
    """Register the server's commands on the ``medannot`` sub-parsers."""
    serve = commands.add_parser("serve", help="run the task-queue server (migrates the database first)")
    _database_options(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; any other needs --allow-remote)")
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        default=None,
        help="allow a non-loopback --host: TLS must then be terminated by a reverse proxy in front",
    )
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--lease-seconds", type=float, help="default lease length of a claim (default 300)")
    serve.add_argument("--max-upload-mb", type=float, help="largest request body in MiB (default 512)")
    serve.add_argument("--max-voxels", type=int, help="largest image or segmentation in voxels")
    serve.add_argument(
        "--max-image-mb", type=float, help="largest image or segmentation once decompressed, in MiB (default 1024)"
    )
    serve.add_argument(
        "--workers", type=int, help="worker processes sharing the port (default 1; about one per CPU core)"
    )
    serve.add_argument(
        "--job-threads", type=int, help="consensus job threads per process (default 1; 0: `medannot worker` runs them)"
    )
    _dask_option(serve)
    serve.add_argument(
        "--durability",
        choices=["full", "relaxed"],
        help="full (default): every commit fsynced; relaxed: a power loss may take the last fraction of a second of "
        "lease grants, heartbeats and releases (never a submission or a decision)",
    )
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="run a task-queue server's consensus jobs (as many as wanted)")
    _database_options(worker)
    _dask_option(worker)
    worker.add_argument("--burst", action="store_true", help="exit when no job is due instead of waiting for more")
    worker.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    worker.set_defaults(func=cmd_worker)

    admin = commands.add_parser("admin", help="users, roles and the audit chain of a task-queue server")
    actions = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    create = actions.add_parser("create-user", help="create a user and print a new API token once")
    create.add_argument("name")
    create.add_argument("--email")
    create.add_argument(
        "--site-admin", "--admin", action="store_true", help="may create projects and users; admin of every project"
    )
    create.add_argument("--expires-in-s", type=float, help="token lifetime in seconds (default: no expiry)")
    _database_options(create)
    create.set_defaults(func=cmd_create_user)

    grant = actions.add_parser("grant", help="give a user a role in a project")
    grant.add_argument("name")
    grant.add_argument("project", help="project name or id")
    grant.add_argument("role", choices=["annotator", "reviewer", "admin"])
    _database_options(grant)
    grant.set_defaults(func=cmd_grant)

    revoke = actions.add_parser("revoke-tokens", help="revoke every token of a user")
    revoke.add_argument("name")
    _database_options(revoke)
    revoke.set_defaults(func=cmd_revoke)

    verify = actions.add_parser(
        "verify-audit", help="check the audit chain and its signed checkpoints; exit 1 naming what is wrong"
    )
    verify.add_argument(
        "--anchor",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="checkpoints exported earlier (kept elsewhere) that the chain and the checkpoint file must still hold",
    )
    _database_options(verify)
    verify.set_defaults(func=cmd_verify_audit)

    export = actions.add_parser(
        "export-audit-checkpoint",
        help="verify the audit chains, then sign a checkpoint of each head and print them (JSON lines) to keep",
    )
    export.add_argument("--anchor", action="append", type=Path, default=[], metavar="FILE", help="as for verify-audit")
    _database_options(export)
    export.set_defaults(func=cmd_verify_audit, export=True)
