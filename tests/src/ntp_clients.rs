//! Real NTP clients, run in a namespace against a server.

use tollgate::netns::Namespace;

/// chronyd as a one-shot client (`-Q`: measure, never set the clock) in
/// `ns`, asking `server`: whether it accepted the server's time.
pub fn chronyd_accepts(ns: &Namespace, server: &str) -> bool {
    let out = ns
        .exec(
            "chronyd",
            &[
                "-Q",
                "-f",
                "/dev/null",
                "-t",
                "10",
                &format!("server {server} iburst"),
            ],
        )
        .unwrap();
    eprintln!("chronyd -Q: {}", String::from_utf8_lossy(&out.stderr));
    out.status.success()
}

/// One plain NTPv4 client request from `source` in `ns` to `server` port
/// 123, with `transmit` as its transmit timestamp (NTP format; 0: none, as
/// some clients send): whether a 48-byte reply came back.
pub fn ask(ns: &Namespace, source: &str, server: &str, transmit: u64) -> bool {
    let s = ns
        .enter(|| std::net::UdpSocket::bind((source, 0)).unwrap())
        .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut request = [0u8; 48];
    request[0] = 0x23; // LI 0, version 4, mode 3 (client)
    request[40..].copy_from_slice(&transmit.to_be_bytes());
    s.send_to(&request, (server, 123)).unwrap();
    let mut reply = [0u8; 128];
    s.recv(&mut reply).is_ok_and(|n| n == 48)
}
