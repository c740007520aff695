//! The few Postgres wire messages the gateway itself reads or writes.
//!
//! Frontend messages the gateway *sends* upstream are encoded with
//! postgres-protocol; backend messages it *parses* from upstream use
//! postgres-protocol's parser. What that crate does not cover — reading
//! startup packets as a server and writing backend messages to clients — is
//! here, kept to the exact layouts of the protocol documentation.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
pub const PROTOCOL_3_0: i32 = 196_608;

/// libpq refuses startup packets above this; so does the gateway.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// The first packet of a connection (or the first after TLS).
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        process_id: i32,
        secret_key: i32,
    },
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid startup packet length {0}")]
    BadStartupLength(i64),
    #[error("unsupported frontend protocol {major}.{minor}: jitgate speaks 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("malformed startup packet: {0}")]
    Malformed(&'static str),
    #[error("invalid message length {0}")]
    BadMessageLength(i64),
    #[error("message of {size} bytes exceeds the gateway's limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("expected a password message, got message type {0:?}")]
    UnexpectedMessage(char),
}

/// Reads one startup-phase packet (length-prefixed, no type byte).
pub async fn read_startup<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<StartupPacket> {
    let length = reader.read_i32().await?;
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&length) {
        return Err(invalid(WireError::BadStartupLength(length.into())));
    }
    let mut body = vec![0u8; length as usize - 4];
    reader.read_exact(&mut body).await?;
    parse_startup(&body).map_err(invalid)
}

/// Parses a startup packet body (after the length).
pub fn parse_startup(body: &[u8]) -> Result<StartupPacket, WireError> {
    let (code, rest) = body
        .split_first_chunk::<4>()
        .ok_or(WireError::Malformed("shorter than its code"))?;
    let code = i32::from_be_bytes(*code);
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST if rest.len() == 8 => {
            let (process_id, secret_key) =
                backend_key(rest).ok_or(WireError::Malformed("bad length"))?;
            Ok(StartupPacket::Cancel {
                process_id,
                secret_key,
            })
        }
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => Err(WireError::Malformed("bad length")),
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != 3 {
                return Err(WireError::UnsupportedProtocol { major, minor });
            }
            Ok(StartupPacket::Startup {
                minor,
                params: parse_params(rest)?,
            })
        }
    }
}

/// A backend key (process id, secret key) as BackendKeyData and
/// CancelRequest carry it: two big-endian i32s, eight bytes in all.
pub fn backend_key(bytes: &[u8]) -> Option<(i32, i32)> {
    let (process_id, secret_key) = bytes.split_first_chunk::<4>()?;
    let secret_key: &[u8; 4] = secret_key.try_into().ok()?;
    Some((
        i32::from_be_bytes(*process_id),
        i32::from_be_bytes(*secret_key),
    ))
}

/// `name\0value\0 ... \0`
fn parse_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    let mut params = Vec::new();
    loop {
        let (name, after) = cstr(rest)?;
        if name.is_empty() {
            return if after.is_empty() {
                Ok(params)
            } else {
                Err(WireError::Malformed("data after the parameter list"))
            };
        }
        let (value, after) = cstr(after)?;
        params.push((name.to_string(), value.to_string()));
        rest = after;
    }
}

/// A NUL-terminated UTF-8 string at the start of `bytes`, and what follows.
pub fn cstr(bytes: &[u8]) -> Result<(&str, &[u8]), WireError> {
    let end = bytes
        .iter()
        .position(|b| *b == 0)
        .ok_or(WireError::Malformed("unterminated string"))?;
    let text = std::str::from_utf8(&bytes[..end]).map_err(|_| WireError::Malformed("not UTF-8"))?;
    Ok((text, &bytes[end + 1..]))
}

/// Reads one typed message (`tag`, body), refusing bodies above `limit`.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> std::io::Result<(u8, Vec<u8>)> {
    let tag = reader.read_u8().await?;
    let length = reader.read_i32().await?;
    if length < 4 {
        return Err(invalid(WireError::BadMessageLength(length.into())));
    }
    let size = length as usize - 4;
    if size > limit {
        return Err(invalid(WireError::TooLarge { size, limit }));
    }
    let mut body = vec![0u8; size];
    reader.read_exact(&mut body).await?;
    Ok((tag, body))
}

/// The password from a `PasswordMessage` body.
pub fn password_from(tag: u8, body: &[u8]) -> Result<String, WireError> {
    if tag != b'p' {
        return Err(WireError::UnexpectedMessage(tag as char));
    }
    let (password, rest) = cstr(body)?;
    if !rest.is_empty() {
        return Err(WireError::Malformed("data after the password"));
    }
    Ok(password.to_string())
}

/// The mechanism and first message of a `SASLInitialResponse` body.
pub fn sasl_initial_response(tag: u8, body: &[u8]) -> Result<(&str, &[u8]), WireError> {
    if tag != b'p' {
        return Err(WireError::UnexpectedMessage(tag as char));
    }
    let (mechanism, rest) = cstr(body)?;
    let (length, data) = rest
        .split_first_chunk::<4>()
        .ok_or(WireError::Malformed("no SASL data length"))?;
    if i32::from_be_bytes(*length) as i64 != data.len() as i64 {
        return Err(WireError::Malformed("SASL data length does not match"));
    }
    Ok((mechanism, data))
}

/// The data of a `SASLResponse` body.
pub fn sasl_response(tag: u8, body: &[u8]) -> Result<&[u8], WireError> {
    match tag {
        b'p' => Ok(body),
        _ => Err(WireError::UnexpectedMessage(tag as char)),
    }
}

fn invalid(error: WireError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error)
}

/// The SQLSTATE codes the gateway itself reports.
pub mod sqlstate {
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CANNOT_CONNECT: &str = "08006";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const PROGRAM_LIMIT: &str = "54000";
    pub const IDLE_TIMEOUT: &str = "57P05";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const IO_ERROR: &str = "58030";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const WARNING: &str = "01000";
}

fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    let length = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&length.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, text: &str) {
    // A NUL inside would end the field early; the gateway's own texts have
    // none, and user-supplied text is stripped of them.
    buf.put_slice(text.replace('\0', "").as_bytes());
    buf.put_u8(0);
}

/// `ErrorResponse` (`E`) or `NoticeResponse` (`N`) with severity, code, text.
fn report(buf: &mut BytesMut, tag: u8, severity: &str, code: &str, text: &str) {
    message(buf, tag, |b| {
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', text),
        ] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        b.put_u8(0);
    });
}

pub fn error_response(buf: &mut BytesMut, severity: &str, code: &str, text: &str) {
    report(buf, b'E', severity, code, text);
}

pub fn fatal(code: &str, text: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    error_response(&mut buf, "FATAL", code, text);
    buf
}

pub fn notice(buf: &mut BytesMut, text: &str) {
    report(buf, b'N', "WARNING", sqlstate::WARNING, text);
}

pub fn auth_cleartext(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(3));
}

/// `AuthenticationSASL` offering `mechanisms`.
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, b'R', |b| {
        b.put_i32(10);
        for mechanism in mechanisms {
            put_cstr(b, mechanism);
        }
        b.put_u8(0);
    });
}

/// `AuthenticationSASLContinue` (11) or `AuthenticationSASLFinal` (12).
pub fn auth_sasl_data(buf: &mut BytesMut, code: i32, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(code);
        b.put_slice(data);
    });
}

pub fn auth_ok(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(0));
}

pub fn backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: i32) {
    message(buf, b'K', |b| {
        b.put_i32(process_id);
        b.put_i32(secret_key);
    });
}

/// Tells a client asking for 3.`minor` that 3.0 is spoken, and which of its
/// `_pq_.` options were not recognised.
pub fn negotiate_protocol_version(buf: &mut BytesMut, unrecognised: &[String]) {
    message(buf, b'v', |b| {
        b.put_i32(PROTOCOL_3_0);
        b.put_i32(unrecognised.len() as i32);
        for option in unrecognised {
            put_cstr(b, option);
        }
    });
}

/// The fields of an `ErrorResponse`/`NoticeResponse` body: (code, message).
pub fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut text) = (String::new(), String::new());
    let mut rest = body;
    while let Some((&field, after)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Ok((value, after)) = cstr(after) else {
            break;
        };
        match field {
            b'C' => code = value.to_string(),
            b'M' => text = value.to_string(),
            _ => {}
        }
        rest = after;
    }
    (code, text)
}

#[cfg(test)]
mod tests;
