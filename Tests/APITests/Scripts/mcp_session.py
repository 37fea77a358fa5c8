"""Drives Corral's MCP endpoint with the official Python MCP client: one session through
every kind of tool, then two sessions on one token, each with its own read-state.

Usage: mcp_session.py URL TOKEN. Prints one JSON object describing what it saw.
"""
import asyncio
import json
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def wire(result):
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


def client_for(url, token, exchanges):
    """The official client over an HTTP client that notes every exchange: method, the
    Mcp-Session-Id sent, the status, and the Mcp-Session-Id answered."""
    http = create_mcp_http_client(headers={"Authorization": "Bearer " + token})

    async def note(response):
        exchanges.append({
            "method": response.request.method, "sent": response.request.headers.get("mcp-session-id"),
            "status": response.status_code, "issued": response.headers.get("mcp-session-id"),
        })

    http.event_hooks = {"response": [note]}
    return Client(streamable_http_client(url, http_client=http))


async def main(url, token):
    exchanges = []
    progress = []

    async def on_progress(value, total, message):
        progress.append(message)

    async with client_for(url, token, exchanges) as client:
        tools = await client.list_tools()
        bash = wire(await client.call_tool("bash", {"command": "echo hi; exit 3"}))
        slow = wire(await client.call_tool(
            "bash", {"command": "for i in 1 2 3; do echo tick $i; sleep 1; done"}, progress_callback=on_progress))
        read = wire(await client.call_tool("read_file", {"path": "hello.py"}))
        edit = wire(await client.call_tool(
            "edit_file", {"path": "hello.py", "old_str": "hello from python", "new_str": "edited over mcp"}))
        reread = wire(await client.call_tool("read_file", {"path": "hello.py"}))
        landed = wire(await client.call_tool("bash", {"command": "cat hello.py"}))
        missing = wire(await client.call_tool("edit_file", {"path": "hello.py", "old_str": "nope", "new_str": "x"}))
        wrong = wire(await client.call_tool("bash", {"command": 42}))
    # Two sessions on the same token: what one read, the other has not.
    others = [[], []]
    async with client_for(url, token, others[0]) as reader, client_for(url, token, others[1]) as writer:
        other_read = wire(await reader.call_tool("read_file", {"path": "hello.sh"}))
        unread = wire(await writer.call_tool(
            "edit_file", {"path": "hello.sh", "old_str": "hello from sh", "new_str": "overwritten"}))
        read_first = wire(await reader.call_tool(
            "edit_file", {"path": "hello.sh", "old_str": "hello from sh", "new_str": "edited by its reader"}))
    print(json.dumps({
        "exchanges": exchanges, "reader_exchanges": others[0], "writer_exchanges": others[1],
        "other_read": other_read, "unread": unread, "read_first": read_first,
        "tools": sorted(t.name for t in tools.tools),
        "schemas": {t.name: t.input_schema for t in tools.tools if t.name == "bash"},
        "bash": bash, "slow": slow, "progress": progress, "read": read, "edit": edit, "reread": reread, "landed": landed,
        "missing": missing, "wrong": wrong,
    }))


asyncio.run(main(sys.argv[1], sys.argv[2]))
