"""`linkd` commands operating on what was linked: users, connections, token, disconnect, export.

The use-cases are in `admin.py`; these commands build the services the daemon uses,
run one, and print the result as a table or as JSON.
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from typing import TYPE_CHECKING, Any

from .cli import admin_flags, command, print_json, print_table, with_services
from .errors import ConfigError

if TYPE_CHECKING:
    from .service import Services


def actor() -> str:
    """Who did it, for the audit log: the operator's login name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch)) if epoch is not None else "-"


@command("users", "list users and how many connections each has", admin_flags)
def cmd_users(args: argparse.Namespace) -> int:
    from .admin import Admin

    rows = with_services(args, lambda s: Admin(s, actor()).users())
    if args.json:
        print_json(rows)
    else:
        print_table(
            ["UUID", "CREATED", "CONNECTIONS"],
            [[r["uuid"], when(r["created_at"]), r["connections"]] for r in rows],
        )
    return 0


def _connections_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", help="only this provider")
    parser.add_argument("--status", choices=("active", "reconnect"), help="only this status")
    parser.add_argument("--account", help="only this account id")
    parser.add_argument("--user", metavar="UUID", help="only this user's connections")
    admin_flags(parser)


@command("connections", "list connections (never their tokens)", _connections_flags)
def cmd_connections(args: argparse.Namespace) -> int:
    from .admin import Admin

    async def use(services: Services) -> list[dict[str, Any]]:
        admin = Admin(services, actor())
        user_id = (await admin.find_user(args.user)).id if args.user else None
        return await admin.all_connections(
            provider=args.provider, status=args.status, account_id=args.account, user_id=user_id
        )

    rows = with_services(args, use)
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ["ID", "PROVIDER", "ACCOUNT", "NAME", "KIND", "PARENT", "STATUS", "EXPIRES", "USER"],
        [
            [
                r["id"],
                r["provider"],
                r["account_id"],
                r["name"],
                r["kind"],
                r["parent_id"] or "-",
                r["status"],
                when(r["expires_at"]),
                r["user_uuid"],
            ]
            for r in rows
        ],
    )
    return 0


def _token_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "connection_id", metavar="CONNECTION_ID", help="the connection's id (see `linkd connections`)"
    )
    parser.add_argument("--show", action="store_true", help="print the access token itself (audited)")
    admin_flags(parser)


@command(
    "token", "a usable access token (refreshed when due): expiry and a masked form, or --show", _token_flags
)
def cmd_token(args: argparse.Namespace) -> int:
    from .admin import Admin, mask, parse_connection_id

    connection_id = parse_connection_id(args.connection_id)
    action = "token_read" if args.show else "token_inspect"
    data = with_services(args, lambda s: Admin(s, actor()).token(connection_id, action))
    if not args.show:
        data["access_token"] = mask(data.pop("access_token"))
    if args.json:
        print_json(data)
    elif args.show:
        print(data["access_token"])
    else:
        left = f" (in {int((data['expires_at'] - time.time()) // 60)} min)" if data["expires_at"] else ""
        print(f"connection {data['connection_id']} ({data['provider']} {data['account_id']})")
        print(f"  token    {data['access_token']}  (use --show to print it)")
        print(f"  expires  {when(data['expires_at'])}{left}")
        print(f"  scopes   {' '.join(data['scopes']) or '-'}")
    return 0


def _disconnect_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "connection_id", metavar="ID", nargs="?", help="the connection to remove (and its children)"
    )
    parser.add_argument("--user", metavar="UUID", help="remove this user and every connection instead")
    parser.add_argument(
        "--no-revoke", action="store_true", help="delete locally without revoking at the platform"
    )
    admin_flags(parser)


@command(
    "disconnect", "revoke at the platform, then delete a connection (or a whole user)", _disconnect_flags
)
def cmd_disconnect(args: argparse.Namespace) -> int:
    from .admin import Admin, parse_connection_id

    if (args.connection_id is None) == (args.user is None):
        raise ConfigError(["disconnect needs either a connection ID or --user UUID"])
    revoke = not args.no_revoke

    async def use(services: Services) -> dict[str, Any]:
        admin = Admin(services, actor())
        if args.user:
            return (await admin.delete_user(args.user, revoke=revoke)).to_json()
        return (await admin.disconnect(parse_connection_id(args.connection_id), revoke=revoke)).to_json()

    result = with_services(args, use)
    if args.json:
        print_json(result)
        return 0
    for r in result["removed"]:
        print(f"removed connection {r['id']} ({r['provider']} {r['account_id']}, {r['name']})")
    if result["revoked"]:
        print("revoked at the platform: " + ", ".join(map(str, result["revoked"])))
    if result["revoke_failed"]:
        print("revoking failed (deleted here all the same): " + ", ".join(map(str, result["revoke_failed"])))
    return 0


def _export_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="UUID", required=True, help="the user whose data to export")
    admin_flags(parser)


@command("export", "everything held about a user, without tokens (for data requests)", _export_flags)
def cmd_export(args: argparse.Namespace) -> int:
    from .admin import Admin

    data = with_services(args, lambda s: Admin(s, actor()).export(args.user))
    if args.json:
        print_json(data)
        return 0
    print(f"user {data['user']['uuid']}, created {when(data['user']['created_at'])}")
    for c in data["connections"]:
        print(f"\nconnection {c['id']}: {c['provider']} {c['account_id']} ({c['name']}, {c['kind']})")
        print(f"  status {c['status']}, linked {when(c['created_at'])}, updated {when(c['updated_at'])}")
        print(f"  scopes {' '.join(c['scopes']) or '-'}")
        for key, value in sorted(c["profile"].items()):
            print(f"  {key}: {json.dumps(value) if not isinstance(value, str) else value}")
    print("\nnot included: " + "; ".join(data["not_included"]))
    return 0
