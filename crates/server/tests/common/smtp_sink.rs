//! A real SMTP server for tests: it speaks enough RFC 5321 for a mail
//! client (EHLO/HELO, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA with dot
//! unstuffing, RSET, NOOP, VRFY, QUIT), keeps every mail it accepts with
//! its envelope, and answers with programmed failures when told to
//! ([`SmtpSink::fail`]). [`Mail`] reads a received message back: headers
//! (unfolded, RFC 2047 words decoded) and MIME parts (quoted-printable and
//! base64 decoded).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

/// Longest command line taken (RFC 5321 asks for 512 octets at least).
const LINE_MAX: usize = 4096;
/// Largest message taken.
const DATA_MAX: usize = 10 * 1024 * 1024;

/// Where in a transaction a programmed failure answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// The `DATA` command itself (instead of `354`).
    Data,
    /// The end of the message data (instead of `250`): the mail is dropped.
    Message,
}

/// Credentials a client authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

/// One accepted mail.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The EHLO/HELO name.
    pub helo: String,
    /// How the session authenticated, if it did.
    pub auth: Option<Auth>,
    /// Envelope sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The message as received, dot-unstuffed, CRLF line ends.
    pub data: Vec<u8>,
}

#[derive(Default)]
struct State {
    mails: Vec<Mail>,
    auths: Vec<Auth>,
    faults: VecDeque<(Stage, String)>,
    /// Every command line received, in order (AUTH payloads left out).
    commands: Vec<String>,
    sessions: usize,
}

/// An SMTP server on a random loopback port, stopped on drop.
pub struct SmtpSink {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    /// Starts a sink that accepts everything.
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().sessions += 1;
                tokio::spawn(session(stream, shared.clone()));
            }
        });
        SmtpSink { addr, state, task }
    }

    /// `smtp://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// `smtp://user:password@127.0.0.1:port`.
    pub fn url_with_auth(&self, user: &str, password: &str) -> String {
        format!("smtp://{user}:{password}@{}", self.addr)
    }

    /// Answers the next `times` commands at `stage` with `reply` (a whole
    /// reply line such as `451 4.3.0 Try again later`).
    pub fn fail(&self, stage: Stage, reply: &str, times: usize) {
        let mut state = self.state.lock().unwrap();
        for _ in 0..times {
            state.faults.push_back((stage, reply.to_owned()));
        }
    }

    /// The mails accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.state.lock().unwrap().mails.clone()
    }

    /// Every successful authentication so far.
    pub fn auths(&self) -> Vec<Auth> {
        self.state.lock().unwrap().auths.clone()
    }

    /// Every command line received so far.
    pub fn commands(&self) -> Vec<String> {
        self.state.lock().unwrap().commands.clone()
    }

    /// Connections accepted so far.
    pub fn sessions(&self) -> usize {
        self.state.lock().unwrap().sessions
    }

    /// The mails once there are at least `n` (or what there is after 15 s,
    /// for the assertion to report).
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let started = Instant::now();
        loop {
            let mails = self.mails();
            if mails.len() >= n || started.elapsed() > Duration::from_secs(15) {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn take_fault(state: &Mutex<State>, stage: Stage) -> Option<String> {
    let mut state = state.lock().unwrap();
    let at = state.faults.iter().position(|(s, _)| *s == stage)?;
    state.faults.remove(at).map(|(_, reply)| reply)
}

/// A line without its CRLF; `None` at the end of the stream or past
/// `LINE_MAX`.
async fn read_line(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut buf = Vec::new();
    let n = reader.read_until(b'\n', &mut buf).await.ok()?;
    if n == 0 || buf.len() > LINE_MAX {
        return None;
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

async fn reply(w: &mut OwnedWriteHalf, text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes()).await?;
    w.write_all(b"\r\n").await
}

/// The address in `FROM:<a@b> PARAMS` / `TO:<a@b>`, after `prefix`.
fn path(arg: &str, prefix: &str) -> Option<String> {
    let rest = arg.get(..prefix.len())?;
    if !rest.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

fn decode64(line: &str) -> Option<String> {
    STANDARD
        .decode(line.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

async fn session(stream: TcpStream, state: Arc<Mutex<State>>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let _ = run_session(&mut r, &mut w, &state).await;
    let _ = w.shutdown().await;
}

async fn run_session(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut OwnedWriteHalf,
    state: &Arc<Mutex<State>>,
) -> std::io::Result<()> {
    reply(w, "220 sink.test ESMTP ready").await?;
    let mut helo: Option<String> = None;
    let mut auth: Option<Auth> = None;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    while let Some(line) = read_line(r).await {
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_owned()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        state.lock().unwrap().commands.push(if verb == "AUTH" {
            format!("AUTH {}", arg.split(' ').next().unwrap_or(""))
        } else {
            line.clone()
        });
        match verb.as_str() {
            "EHLO" | "HELO" if arg.is_empty() => reply(w, "501 5.5.4 Domain name required").await?,
            "EHLO" => {
                helo = Some(arg.clone());
                (from, to) = (None, Vec::new());
                w.write_all(
                    format!(
                        "250-sink.test greets {arg}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE {DATA_MAX}\r\n250-AUTH PLAIN LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
            }
            "HELO" => {
                helo = Some(arg.clone());
                (from, to) = (None, Vec::new());
                reply(w, "250 sink.test").await?;
            }
            "AUTH" => {
                if helo.is_none() {
                    reply(w, "503 5.5.1 EHLO first").await?;
                    continue;
                }
                if auth.is_some() {
                    reply(w, "503 5.5.1 Already authenticated").await?;
                    continue;
                }
                let mut words = arg.split_whitespace();
                let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
                let initial = words.next().map(str::to_owned);
                let got = match mechanism.as_str() {
                    "PLAIN" => {
                        let response = match initial {
                            Some(i) => i,
                            None => {
                                reply(w, "334 ").await?;
                                read_line(r).await.unwrap_or_default()
                            }
                        };
                        decode64(&response).and_then(|text| {
                            let mut parts = text.split('\0');
                            let _authzid = parts.next()?;
                            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
                        })
                    }
                    "LOGIN" => {
                        let user = match initial {
                            Some(i) => decode64(&i),
                            None => {
                                reply(w, "334 VXNlcm5hbWU6").await?;
                                decode64(&read_line(r).await.unwrap_or_default())
                            }
                        };
                        reply(w, "334 UGFzc3dvcmQ6").await?;
                        let password = decode64(&read_line(r).await.unwrap_or_default());
                        user.zip(password)
                    }
                    _ => {
                        reply(w, "504 5.5.4 Unrecognized authentication type").await?;
                        continue;
                    }
                };
                match got {
                    Some((username, password)) => {
                        let a = Auth {
                            mechanism,
                            username,
                            password,
                        };
                        state.lock().unwrap().auths.push(a.clone());
                        auth = Some(a);
                        reply(w, "235 2.7.0 Authentication successful").await?;
                    }
                    None => reply(w, "501 5.5.2 Cannot decode response").await?,
                }
            }
            "MAIL" => {
                if helo.is_none() {
                    reply(w, "503 5.5.1 EHLO first").await?;
                } else if from.is_some() {
                    reply(w, "503 5.5.1 Nested MAIL command").await?;
                } else if let Some(address) = path(&arg, "FROM:") {
                    match take_fault(state, Stage::Mail) {
                        Some(fault) => reply(w, &fault).await?,
                        None => {
                            from = Some(address);
                            reply(w, "250 2.1.0 Ok").await?;
                        }
                    }
                } else {
                    reply(w, "501 5.5.4 Syntax: MAIL FROM:<address>").await?;
                }
            }
            "RCPT" => {
                if from.is_none() {
                    reply(w, "503 5.5.1 Need MAIL before RCPT").await?;
                } else if let Some(address) = path(&arg, "TO:") {
                    match take_fault(state, Stage::Rcpt) {
                        Some(fault) => reply(w, &fault).await?,
                        None => {
                            to.push(address);
                            reply(w, "250 2.1.5 Ok").await?;
                        }
                    }
                } else {
                    reply(w, "501 5.5.4 Syntax: RCPT TO:<address>").await?;
                }
            }
            "DATA" => {
                if from.is_none() {
                    reply(w, "503 5.5.1 Need MAIL command").await?;
                    continue;
                }
                if to.is_empty() {
                    reply(w, "554 5.5.1 No valid recipients").await?;
                    continue;
                }
                if let Some(fault) = take_fault(state, Stage::Data) {
                    reply(w, &fault).await?;
                    continue;
                }
                reply(w, "354 End data with <CR><LF>.<CR><LF>").await?;
                let Some(data) = read_data(r).await? else {
                    reply(w, "552 5.3.4 Message too big").await?;
                    (from, to) = (None, Vec::new());
                    continue;
                };
                let mail = Mail {
                    helo: helo.clone().unwrap_or_default(),
                    auth: auth.clone(),
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                };
                if let Some(fault) = take_fault(state, Stage::Message) {
                    reply(w, &fault).await?;
                    continue;
                }
                let n = {
                    let mut s = state.lock().unwrap();
                    s.mails.push(mail);
                    s.mails.len()
                };
                reply(w, &format!("250 2.0.0 Ok: queued as {n}")).await?;
            }
            "RSET" => {
                (from, to) = (None, Vec::new());
                reply(w, "250 2.0.0 Ok").await?;
            }
            "NOOP" => reply(w, "250 2.0.0 Ok").await?,
            "VRFY" => reply(w, "252 2.0.0 Cannot VRFY user").await?,
            "QUIT" => {
                reply(w, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => reply(w, "500 5.5.2 Command not recognized").await?,
        }
    }
    Ok(())
}

/// The message after `354`, up to the lone dot, unstuffed; `None` when it
/// is over `DATA_MAX` (read to its end all the same).
async fn read_data(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut too_big = false;
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok((!too_big).then_some(data));
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() + line.len() > DATA_MAX {
            too_big = true;
        } else {
            data.extend_from_slice(line);
        }
    }
}

// ---------------------------------------------------------------------
// Reading a received mail back.

impl Mail {
    /// The raw message as text.
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// A top-level header, unfolded and decoded (the first of that name).
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = split_entity(&self.raw());
        headers
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_words(&v))
    }

    /// The decoded subject.
    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    /// The decoded body of the first part of type `mime` (`text/plain`,
    /// `text/html`), however deep in multiparts.
    pub fn part(&self, mime: &str) -> Option<String> {
        find_part(&self.raw(), mime)
    }

    /// The plain text part.
    pub fn text(&self) -> String {
        self.part("text/plain").expect("a text/plain part")
    }

    /// The HTML part.
    pub fn html(&self) -> String {
        self.part("text/html").expect("a text/html part")
    }

    /// Every `…/links/<token>` URL under `base` in `body`, in order.
    pub fn links_in(body: &str, base: &str) -> Vec<String> {
        let prefix = format!("{base}/links/");
        let mut found = Vec::new();
        let mut rest = body;
        while let Some(at) = rest.find(&prefix) {
            let tail = &rest[at + prefix.len()..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                .unwrap_or(tail.len());
            found.push(format!("{prefix}{}", &tail[..end]));
            rest = &tail[end..];
        }
        found
    }
}

/// Headers (unfolded, in order) and body of a MIME entity.
fn split_entity(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = match raw.find("\r\n\r\n") {
        Some(at) => (&raw[..at], &raw[at + 4..]),
        None => match raw.find("\n\n") {
            Some(at) => (&raw[..at], &raw[at + 2..]),
            None => (raw, ""),
        },
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A parameter of a header like `multipart/alternative; boundary="x"`.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn find_part(raw: &str, mime: &str) -> Option<String> {
    let (headers, body) = split_entity(raw);
    let content_type = header(&headers, "Content-Type").unwrap_or("text/plain");
    let kind = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if kind.starts_with("multipart/") {
        let boundary = param(content_type, "boundary")?;
        let delimiter = format!("--{boundary}");
        return body
            .split(&delimiter)
            .skip(1)
            .take_while(|part| !part.starts_with("--"))
            .find_map(|part| find_part(part.trim_start_matches(['\r', '\n']), mime));
    }
    if kind != mime {
        return None;
    }
    let encoding = header(&headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "quoted-printable" => decode_qp(&body),
        "base64" => STANDARD
            .decode(body.split_whitespace().collect::<String>())
            .expect("valid base64"),
        _ => body.into_bytes(),
    };
    // A part ends with the CRLF that belongs to the next delimiter.
    let text = String::from_utf8(bytes).expect("UTF-8 body");
    Some(text.strip_suffix("\r\n").unwrap_or(&text).to_owned())
}

/// Quoted-printable (RFC 2045): soft line breaks removed, `=XX` decoded.
pub fn decode_qp(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3,
            b'=' if bytes[i + 1..].starts_with(b"\n") => i += 2,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`);
/// whitespace between two encoded words goes.
pub fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        match decode_word(&rest[start..]) {
            Some((text, len)) => {
                if !(after_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&text);
                rest = &rest[start + len..];
                after_word = true;
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                after_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `text`: its text and its length.
fn decode_word(text: &str) -> Option<(String, usize)> {
    let inner = text.strip_prefix("=?")?;
    let mut parts = inner.splitn(3, '?');
    let charset = parts.next()?;
    let encoding = parts.next()?;
    let rest = parts.next()?;
    let end = rest.find("?=")?;
    let payload = &rest[..end];
    let bytes = match encoding {
        "b" | "B" => STANDARD.decode(payload).ok()?,
        "q" | "Q" => decode_qp(&payload.replace('_', " ")),
        _ => return None,
    };
    let len = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    Some((String::from_utf8(bytes).ok()?, len))
}
