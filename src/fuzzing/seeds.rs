//! Well-formed inputs for each fuzz entry, in the layouts the entries read:
//! the fuzzer's starting corpus (`fuzz/write-seeds`) and the unit tests'
//! material for mutation.

/// The fuzz targets, by name (as under `fuzz/fuzz_targets/`).
pub const TARGETS: &[&str] = &[
    "postgres_startup",
    "postgres_framing",
    "postgres_query_log",
    "postgres_scram",
    "sftp_log",
    "scp_log",
    "control_line",
    "journal",
    "config",
];

/// Runs the entry of the target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "postgres_startup" => super::postgres_startup(data),
        "postgres_framing" => super::postgres_framing(data),
        "postgres_query_log" => super::postgres_query_log(data),
        "postgres_scram" => super::postgres_scram(data),
        "sftp_log" => super::sftp_log(data),
        "scp_log" => super::scp_log(data),
        "control_line" => super::control_line(data),
        "journal" => super::journal(data),
        "config" => super::config(data),
        _ => {}
    }
}

/// Starting inputs for the target `name`.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "postgres_startup" => postgres_startup(),
        "postgres_framing" => vec![[&[7u8][..], &postgres_conversation()].concat()],
        "postgres_query_log" => vec![[&[1u8][..], &as_segments(&query_log_parts())].concat()],
        "postgres_scram" => vec![
            b"r=nonceSERVER,s=c2FsdA==,i=16\xffv=AAAA".to_vec(),
            b"r=nonce+x,s=,i=1\xffe=invalid-proof".to_vec(),
            // A client's first and final messages, to the gateway's side.
            b"n,,n=,r=rOprNGfwEbeRWgbNEkqO\xffc=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=".to_vec(),
            b"p=tls-server-end-point,,n=,r=abc\xffc=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=abc,p=AAAA".to_vec(),
        ],
        "sftp_log" => vec![[&[3u8][..], &as_segments(&sftp_parts())].concat()],
        "scp_log" => scp_seeds(),
        "control_line" => [
            "request web-01 --for 30m --reason disk full --ticket INC-1",
            "approve 7 --comment ok",
            "checkout 7 --code 123456",
            "audit tail -n 20 --since 10:30 --user alice --json",
            "sessions --json",
            "alice+web-01",
        ]
        .iter()
        .map(|line| line.as_bytes().to_vec())
        .collect(),
        "journal" => vec![
            [
                crate::journal::encode_frame(1, b"{\"events\":[]}"),
                crate::journal::encode_frame(2, b"second"),
            ]
            .concat(),
        ],
        "config" => vec![EXAMPLE_CONFIG.as_bytes().to_vec()],
        _ => Vec::new(),
    }
}

/// The example config shipped with the project.
const EXAMPLE_CONFIG: &str = include_str!("../../config/jitgate.example.toml");

/// A Postgres message: tag, length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn postgres_startup() -> Vec<Vec<u8>> {
    let mut startup = 196_608i32.to_be_bytes().to_vec();
    startup.extend_from_slice(b"user\0alice\0database\0orders-prod\0\0");
    let mut cancel = 80_877_102i32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&[0, 0, 0, 7, 1, 2, 3, 4]);
    vec![
        startup,
        cancel,
        80_877_103i32.to_be_bytes().to_vec(),
        b"pthe-lease-password\0".to_vec(),
        b"SFATAL\0C28P01\0Mpassword authentication failed\0\0".to_vec(),
    ]
}

/// Client and server messages of an extended-protocol round trip.
fn query_log_parts() -> Vec<(bool, Vec<u8>)> {
    let bind = [&b"\0s1\0"[..], &[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]].concat();
    vec![
        (true, [&b"P"[..], b"s1\0select $1\0\0\0"].concat()),
        (true, [&b"B"[..], &bind].concat()),
        (true, b"E\0\0\0\0\0".to_vec()),
        (true, b"S".to_vec()),
        (true, b"Qselect 1; select 2\0".to_vec()),
        (false, b"1".to_vec()),
        (false, b"2".to_vec()),
        (false, b"CSELECT 1\0".to_vec()),
        (false, b"ZI".to_vec()),
        (false, b"CSELECT 1\0".to_vec()),
        (false, b"ESERROR\0C42P01\0Mno such table\0\0".to_vec()),
        (false, b"ZI".to_vec()),
    ]
}

/// A session's bytes in both directions, as the relay sees them.
fn postgres_conversation() -> Vec<u8> {
    [
        message(b'Q', b"select 1\0"),
        message(b'T', &[0; 20]),
        message(b'd', &[1; 100]),
        message(b'C', b"SELECT 1\0"),
        message(b'Z', b"I"),
    ]
    .concat()
}

fn sftp_packet(kind: u8, id: u32, fields: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = [&[kind][..], &id.to_be_bytes()]
        .into_iter()
        .chain(fields.iter().copied())
        .flatten()
        .copied()
        .collect();
    [&(body.len() as u32).to_be_bytes()[..], &body].concat()
}

fn sftp_string(bytes: &[u8]) -> Vec<u8> {
    [&(bytes.len() as u32).to_be_bytes()[..], bytes].concat()
}

/// An upload: open, write, close, each answered.
fn sftp_parts() -> Vec<(bool, Vec<u8>)> {
    let ok = sftp_packet(101, 0, &[&0u32.to_be_bytes(), &sftp_string(b""), &[0; 4]]);
    let reply_to = |id: u32| {
        let mut reply = ok.clone();
        reply[5..9].copy_from_slice(&id.to_be_bytes());
        reply
    };
    vec![
        (
            true,
            sftp_packet(
                3,
                1,
                &[&sftp_string(b"/tmp/up"), &0x1au32.to_be_bytes(), &[0; 4]],
            ),
        ),
        (false, sftp_packet(102, 1, &[&sftp_string(b"H1")])),
        (
            true,
            sftp_packet(
                6,
                2,
                &[&sftp_string(b"H1"), &[0; 8], &sftp_string(&[1; 40])],
            ),
        ),
        (false, reply_to(2)),
        (true, sftp_packet(4, 3, &[&sftp_string(b"H1")])),
        (false, reply_to(3)),
        (true, sftp_packet(13, 4, &[&sftp_string(b"/nope")])),
        (false, reply_to(4)),
        (true, sftp_packet(11, 5, &[&sftp_string(b"/etc")])),
        (false, sftp_packet(102, 5, &[&sftp_string(b"D1")])),
        (true, sftp_packet(12, 6, &[&sftp_string(b"D1")])),
        (
            false,
            sftp_packet(
                104,
                6,
                &[
                    &1u32.to_be_bytes(),
                    &sftp_string(b"a"),
                    &sftp_string(b"a"),
                    &[0; 4],
                ],
            ),
        ),
        (true, sftp_packet(4, 7, &[&sftp_string(b"D1")])),
        (false, reply_to(7)),
    ]
}

fn scp_seeds() -> Vec<Vec<u8>> {
    let upload = vec![
        (false, b"\0".to_vec()),
        (true, b"D0755 0 dir\n".to_vec()),
        (false, b"\0".to_vec()),
        (true, b"C0644 5 f.txt\nhello\0".to_vec()),
        (false, b"\0\0".to_vec()),
        (true, b"E\n".to_vec()),
        (false, b"\x02scp: dir: Permission denied\n".to_vec()),
    ];
    let download = vec![
        (true, b"\0".to_vec()),
        (false, b"C0600 3 log\nabc\0".to_vec()),
        (true, b"\0\0".to_vec()),
    ];
    vec![
        [&b"scp -r -t /srv\n\x05"[..], &as_segments(&upload)].concat(),
        [&b"scp -f /var/log/log\n\x09"[..], &as_segments(&download)].concat(),
    ]
}

/// Lays out (direction, bytes) parts as the entries' segments read them.
fn as_segments(parts: &[(bool, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (from_client, bytes) in parts {
        for chunk in bytes.chunks(255) {
            out.push(u8::from(*from_client));
            out.push(chunk.len() as u8);
            out.extend_from_slice(chunk);
        }
    }
    out
}
