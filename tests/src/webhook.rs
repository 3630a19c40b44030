//! An HTTP(S) receiver on loopback for the webhook sink tests: records each
//! POST (path, auth header, body) and answers what the test says.

use std::{
    io::{BufRead as _, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub auth: Option<String>,
    pub body: Vec<u8>,
}

/// An HTTP/1.1 server on loopback that records each POST and answers 200.
pub struct Receiver {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The receiver's answer to a request: status and JSON body.
pub type Answer = Arc<dyn Fn(&Received) -> (u16, String) + Send + Sync>;

pub fn ok_answer() -> Answer {
    Arc::new(|_| (200, "{\"text\":\"Success\",\"code\":0}".into()))
}

fn handle<S: Read + Write>(mut stream: S, answer: &Answer) -> std::io::Result<Received> {
    let mut r = BufReader::new(&mut stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
    let (mut len, mut auth) = (0usize, None);
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    drop(r);
    let got = Received { path, auth, body };
    let (status, text) = answer(&got);
    stream.write_all(
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
        .as_bytes(),
    )?;
    stream.flush()?;
    Ok(got)
}

/// One connection, in TLS when the receiver has a server config.
fn serve(conn: TcpStream, tls: Option<&Arc<rustls::ServerConfig>>, answer: &Answer) -> std::io::Result<Received> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    match tls {
        None => handle(conn, answer),
        Some(cfg) => {
            let session = rustls::ServerConnection::new(cfg.clone()).map_err(std::io::Error::other)?;
            let mut stream = rustls::StreamOwned::new(session, conn);
            let got = handle(&mut stream, answer)?;
            stream.conn.send_close_notify();
            let _ = stream.flush();
            Ok(got)
        }
    }
}

impl Receiver {
    pub fn start(port: u16, got: Arc<Mutex<Vec<Received>>>) -> Receiver {
        Self::start_tls(port, got, None)
    }

    pub fn start_tls(port: u16, got: Arc<Mutex<Vec<Received>>>, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        Self::start_answering(port, got, tls, ok_answer())
    }

    pub fn start_answering(
        port: u16,
        got: Arc<Mutex<Vec<Received>>>,
        tls: Option<Arc<rustls::ServerConfig>>,
        answer: Answer,
    ) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("receiver port");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(req) = serve(conn, tls.as_ref(), &answer) {
                    g.lock().unwrap().push(req);
                }
            }
        });
        Receiver {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listening socket: connections are refused from now on.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            t.join().expect("receiver thread");
        }
    }
}
