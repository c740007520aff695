//! The relay is transparent: random batches of frontend messages (simple
//! and extended protocol, pipelines with errors, portals suspended at row
//! limits, COPY in and out, notices, large rows) get byte for byte the
//! answers through the gateway that they get from PostgreSQL directly.

mod common;

use std::io::{Read, Write};

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use common::pg_raw::{self as raw, world_with_known_ca};
use jitgate::fuzzing::Dice;

const STATEMENTS: &[&str] = &[
    "select 1",
    "select a, b from t order by a limit 3",
    "select count(*), sum(length(b)) from t",
    "insert into t select g, repeat('x', g % 50) from generate_series(1, 20) g",
    "insert into t values (7, repeat('y', 300000))",
    "delete from t where a % 3 = 0",
    "select no_such_column from t",
    "",
    "do $$ begin raise notice 'rows: %', (select count(*) from t); end $$",
    "begin",
    "commit",
    "rollback",
    "select 1/0",
];

const PREPARED: &[&str] = &[
    "select $1::int + 1",
    "select a, b from t where a > $1::int order by a",
    "insert into t values ($1::int, 'prepared')",
    "select syntax error here",
];

/// One batch: bytes to send, how many ReadyForQuery answer them and how
/// many statements (queries and executions) the query log should show.
fn batch(dice: &mut Dice) -> (Vec<u8>, usize, usize) {
    let mut out = BytesMut::new();
    let mut ready = 0;
    let mut statements = 1;
    match dice.roll(4) {
        0 => {
            let parts: Vec<&str> = (0..=dice.roll(3))
                .map(|_| STATEMENTS[dice.roll(STATEMENTS.len())])
                .collect();
            frontend::query(&parts.join("; "), &mut out).unwrap();
            ready += 1;
        }
        1 => {
            let rows = dice.roll(15);
            frontend::query("copy t from stdin", &mut out).unwrap();
            for n in 0..rows {
                frontend::CopyData::new(format!("{n}\tcopied {n}\n").as_bytes())
                    .unwrap()
                    .write(&mut out);
            }
            match dice.roll(3) {
                0 => frontend::copy_fail("changed my mind", &mut out).unwrap(),
                _ => frontend::copy_done(&mut out),
            }
            ready += 1;
        }
        2 => {
            frontend::query("copy (select * from t order by a) to stdout", &mut out).unwrap();
            ready += 1;
        }
        _ => {
            let (syncs, executions) = extended(dice, &mut out);
            ready += syncs;
            statements = executions;
        }
    }
    (out.to_vec(), ready, statements)
}

/// A pipeline of extended-protocol messages ending with a Sync; returns
/// the Syncs and Executes in it.
fn extended(dice: &mut Dice, out: &mut BytesMut) -> (usize, usize) {
    let mut ready = 0;
    let executions = dice.roll(5) + 1;
    for _ in 0..executions {
        let name = ["", "s1", "s2"][dice.roll(3)];
        let portal = ["", "p1"][dice.roll(2)];
        let text = PREPARED[dice.roll(PREPARED.len())];
        frontend::parse(name, text, [], out).unwrap();
        let value = dice.roll(30).to_string();
        frontend::bind(
            portal,
            name,
            [0],
            [value.as_str()],
            |v, buf| {
                buf.extend_from_slice(v.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            },
            [0],
            out,
        )
        .map_err(|_| "bind")
        .unwrap();
        if dice.roll(2) == 0 {
            frontend::describe(b'P', portal, out).unwrap();
        }
        frontend::execute(portal, [0, 1, 2][dice.roll(3)], out).unwrap();
        match dice.roll(5) {
            0 => frontend::close(b'S', name, out).unwrap(),
            1 => frontend::flush(out),
            2 => {
                frontend::sync(out);
                ready += 1;
            }
            _ => {}
        }
    }
    frontend::sync(out);
    (ready + 1, executions)
}

/// The answers to a batch, up to its last ReadyForQuery, as compared: the
/// process id of a notification is each server's own, and so is the OID of
/// each session's temporary table in a row description.
fn answers(stream: &mut (impl Read + Write), bytes: &[u8], ready: usize) -> Vec<(u8, Vec<u8>)> {
    raw::send(stream, bytes);
    let mut seen = 0;
    let mut out = Vec::new();
    while seen < ready {
        let (tag, mut body) = raw::read(stream);
        match tag {
            b'Z' => seen += 1,
            b'A' => body.drain(..4).for_each(drop),
            b'T' => forget_table_oids(&mut body),
            b'S' => continue,
            _ => {}
        }
        out.push((tag, body));
    }
    out
}

/// Zeroes the table OID of each field of a RowDescription.
fn forget_table_oids(body: &mut [u8]) {
    let fields = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    for _ in 0..fields {
        at += body[at..].iter().position(|&b| b == 0).unwrap() + 1;
        body[at..at + 4].fill(0);
        at += 18;
    }
}

fn describe(messages: &[(u8, Vec<u8>)]) -> Vec<String> {
    messages
        .iter()
        .map(|(tag, body)| {
            let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
            format!("{} {} {text:?}", *tag as char, body.len())
        })
        .collect()
}

#[test]
fn random_batches_get_the_same_answers_through_the_gateway_as_directly() {
    let (world, tls) = world_with_known_ca("");
    let (_, password) = world.lease_pg("alice", "10m");
    let managed = world.vault().current("orders-prod").unwrap();
    let mut gateway = raw::connect(world.pg_port, &tls.path().join("ca.crt"));
    raw::login(&mut gateway, "alice", "orders-prod", &password);
    let port = world.pg().server.port;
    let mut direct = raw::login_direct(port, "orders_app", "orders", managed.expose());
    let setup = {
        let mut out = BytesMut::new();
        frontend::query("create temp table t (a int, b text)", &mut out).unwrap();
        out.to_vec()
    };
    assert_eq!(
        answers(&mut gateway, &setup, 1),
        answers(&mut direct, &setup, 1)
    );
    let mut dice = Dice(0x0000_ddb1_a5e5);
    let mut statements = 1;
    for round in 0..300 {
        let (bytes, ready, logged) = batch(&mut dice);
        statements += logged;
        let through = answers(&mut gateway, &bytes, ready);
        let straight = answers(&mut direct, &bytes, ready);
        assert!(
            through == straight,
            "round {round}: the gateway answered\n{:#?}\nPostgreSQL\n{:#?}",
            describe(&through),
            describe(&straight)
        );
    }
    // Every statement is in the query log once, with how it ended.
    let mut bye = BytesMut::new();
    frontend::terminate(&mut bye);
    raw::send(&mut gateway, &bye);
    drop(gateway);
    let entries = || world.query_logs().lines().count();
    assert!(
        common::wait_until(std::time::Duration::from_secs(10), || entries()
            == statements),
        "{} query log entries for {statements} statements",
        entries()
    );
    for line in world.query_logs().lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(!entry["outcome"].as_str().unwrap().is_empty(), "{line}");
    }
}
