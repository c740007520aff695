"""Drives the gateway's Postgres port with asyncpg, a driver that speaks
the protocol itself (no libpq): binary formats, named prepared statements,
pipelined executemany, binary COPY both ways, cursors (portals with row
limits), LISTEN/NOTIFY and a failed transaction.

Usage: asyncpg_client.py PORT USER DATABASE PASSWORD

Prints one JSON object with what each step returned.
"""

import asyncio
import io
import json
import sys

import asyncpg


async def connect(port, user, database, password):
    return await asyncpg.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        database=database,
        password=password,
        ssl="require",
    )


async def main(port, user, database, password):
    conn = await connect(port, user, database, password)
    listener = await connect(port, user, database, password)
    results = {}

    await conn.execute("create table readings (id int primary key, value float8, tags text[])")
    await conn.executemany(
        "insert into readings values ($1, $2, $3)",
        [(n, n / 4, [f"t{n % 3}", "x"]) for n in range(1, 1001)],
    )
    row = await conn.fetchrow(
        "select count(*), sum(value), max(tags) from readings where id > $1", 500
    )
    results["fetchrow"] = [row[0], row[1], row[2]]

    await conn.copy_records_to_table(
        "readings",
        records=[(n, -1.5, None) for n in range(1001, 3001)],
        columns=["id", "value", "tags"],
    )
    out = io.BytesIO()
    await conn.copy_from_query("select id, value from readings order by id", output=out, format="binary")
    results["binary_copy_out_bytes"] = len(out.getvalue())

    async with conn.transaction():
        seen = 0
        async for _ in conn.cursor("select id from readings order by id", prefetch=64):
            seen += 1
        results["cursor_rows"] = seen

    try:
        async with conn.transaction():
            await conn.execute("insert into readings values (1, 0, null)")
    except asyncpg.UniqueViolationError as error:
        results["unique_violation"] = error.sqlstate
    results["after_failed_transaction"] = await conn.fetchval("select count(*) from readings")

    notified = asyncio.get_running_loop().create_future()
    await listener.add_listener("ticks", lambda *args: notified.set_result(args[3]))
    await conn.execute("select pg_notify('ticks', 'hello from asyncpg')")
    results["notification"] = await asyncio.wait_for(notified, 10)

    await listener.close()
    await conn.close()
    print(json.dumps(results))


if __name__ == "__main__":
    port, user, database, password = sys.argv[1:5]
    asyncio.run(main(int(port), user, database, password))
